"""End to end on Swift: a real `pli run` with `[vault] objects = "swift"` against the
session's Swift All In One.

A protected message goes in by SMTP (smtplib) under the default policy; its documents go
to Swift, sealed, and none to the vault's folder; the patient's side of the portal
(code, manifest, grant, ranged GETs) gives back ciphertext that opens, with the link's
key, to the very bytes sent. With Swift not answering, the client gets 451 and a
sentence, and nothing is kept: no link, no queue file, no object; once Swift is back the
same message goes through. `pli links revoke` and `purge` take a link out of Swift.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import smtplib
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate

import pytest

from gateway.app import build_vault
from gateway.vault.format import (
    MANIFEST_OBJECT_ID,
    b64url_decode,
    decode_manifest,
    decrypt_object,
    derive_keys,
)
from tests.portal.test_after_sending import BODY, DOCUMENTS, SUBJECT, Sent, Stack, send
from tests.portal.test_browser import _point_portal_at
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    LoopThread,
    PliProcess,
    Provider,
    free_port,
    make_gateway,
    wait_for_port,
    wait_until,
)
from tests.swiftaio import SwiftAio
from tests.test_cli import pli


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, swift: SwiftAio) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("swift-e2e")
    container = f"pli-e2e-{uuid.uuid4().hex[:8]}"
    loop = LoopThread()
    gw = make_gateway(folder / "pli", policy=None,
                      extra=swift.vault_table(container, timeout=2))
    port = free_port()
    _point_portal_at(gw, port)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    proc = PliProcess(gw, folder / "pli-run.log").start()
    try:
        wait_for_port(port)
        yield Stack(gw, provider, f"http://{HOST}:{port}")
    finally:
        proc.kill(15)
        provider.stop()
        loop.close()


class Portal:
    """The patient's side of the portal, as the page asks for it."""

    def __init__(self, stack: Stack, sent: Sent) -> None:
        self.port = int(stack.base.rsplit(":", 1)[1])
        self.sent = sent
        self.cookie = ""

    def ask(self, method: str, path: str, headers: dict[str, str] | None = None,
            body: object = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            sending = {**(headers or {}), **({"Cookie": self.cookie} if self.cookie else {})}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                sending["Content-Type"] = "application/json"
            connection.request(method, path, body=data, headers=sending)
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    def enter_code(self) -> None:
        status, headers, _ = self.ask("POST", f"/api/l/{self.sent.link_id}/code",
                                      body={"code": self.sent.code})
        assert status == 200
        self.cookie = headers["Set-Cookie"].split(";", 1)[0]

    def grant(self, object_id: str) -> dict[str, str]:
        status, _, body = self.ask("POST", f"/api/l/{self.sent.link_id}/o/{object_id}/grant",
                                   body={})
        assert status == 200, body
        return {"Authorization": f"Bearer {json.loads(body)['grant']}"}


def test_a_protected_message_goes_to_swift_and_opens_byte_for_byte(
        stack: Stack, swift: SwiftAio) -> None:
    sent = send(stack)
    settings = stack.gw.settings()
    vault = build_vault(settings)
    try:
        info = vault.get(sent.link_id)
        assert info is not None and len(info.files) == 2
        in_swift = vault.store._listing(prefix=sent.link_id + "/")  # type: ignore[attr-defined]
        assert sorted(e["name"].split("/")[1] for e in in_swift) == sorted(
            o.id for o in info.objects)
        assert not (settings.vault_dir / "objects" / sent.link_id).exists()
    finally:
        vault.close()

    portal = Portal(stack, sent)
    portal.enter_code()
    keys = derive_keys(b64url_decode(sent.secret, 32), b64url_decode(sent.link_id, 16))
    status, _, sealed = portal.ask("GET", f"/api/l/{sent.link_id}/o/{MANIFEST_OBJECT_ID}")
    assert status == 200
    manifest = decode_manifest(b"".join(decrypt_object(keys.manifest, MANIFEST_OBJECT_ID,
                                                       sealed)))
    assert manifest.subject == SUBJECT and BODY.split("\n")[1] in (manifest.text or "")
    assert [f.name for f in manifest.files] == [name for name, _ in DOCUMENTS]
    for entry, (_, original) in zip(manifest.files, DOCUMENTS, strict=True):
        url = f"/api/l/{sent.link_id}/o/{entry.object_id}"
        granted = portal.grant(entry.object_id)
        status, headers, first = portal.ask("GET", url, {**granted, "Range": "bytes=0-69999"})
        assert status == 206
        total = int(headers["Content-Range"].rsplit("/", 1)[1])
        assert headers["Content-Range"] == f"bytes 0-69999/{total}" and len(first) == 70000
        status, headers, rest = portal.ask("GET", url, {**granted, "Range": "bytes=70000-"})
        assert status == 206 and headers["Content-Range"] == f"bytes 70000-{total - 1}/{total}"
        opened = b"".join(decrypt_object(keys.content, entry.object_id, first + rest))
        assert opened == original


def message(subject: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"Dr Martin <{ADDRESS}>"
    mail["To"] = "patient@gmail.com"
    mail["Subject"] = subject
    mail["Date"] = formatdate(localtime=True)
    mail.set_content("Bonjour")
    mail.add_attachment(DOCUMENTS[0][1], maintype="application", subtype="pdf",
                        filename="bilan.pdf")
    return mail


def test_with_swift_not_answering_the_client_gets_451_and_nothing_is_kept(
        stack: Stack, swift: SwiftAio) -> None:
    settings = stack.gw.settings()
    queue = settings.spool_dir / "queue"
    vault = build_vault(settings)
    links_before = {i.id for i in vault.links()}
    objects_before = vault.store.link_ids()
    received_before = len(stack.provider.received)
    queued_before = set(os.listdir(queue))
    proxy = int((swift.folder / "run" / "proxy.pid").read_text())
    os.kill(proxy, signal.SIGSTOP)  # connections are taken, never answered
    try:
        with smtplib.SMTP(HOST, stack.gw.submission_port, timeout=30) as client:
            client.starttls(context=stack.gw.client_context())
            client.login(USER, PASSWORD)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.send_message(message("Swift down"))
    finally:
        os.kill(proxy, signal.SIGCONT)
    assert refused.value.smtp_code == 451
    said = refused.value.smtp_error.decode()
    assert "4.3.0" in said and "Pli's vault, where protected documents are kept, does not " \
        "answer" in " ".join(said.split())
    try:
        assert {i.id for i in vault.links()} == links_before
        assert vault.store.link_ids() == objects_before
        assert set(os.listdir(queue)) <= queued_before
        assert os.listdir(settings.spool_dir / "incoming") == []
        assert len(stack.provider.received) == received_before
        # Swift is back: the client's next try goes through.
        with smtplib.SMTP(HOST, stack.gw.submission_port, timeout=30) as client:
            client.starttls(context=stack.gw.client_context())
            client.login(USER, PASSWORD)
            client.send_message(message("Swift back"))
        assert len({i.id for i in vault.links()} - links_before) == 1
        wait_until(lambda: len(stack.provider.received) >= received_before + 2)  # notice, receipt
    finally:
        vault.close()


def test_pli_links_revokes_and_purges_a_link_out_of_swift(stack: Stack) -> None:
    sent = send(stack)
    config = str(stack.gw.config)
    vault = build_vault(stack.gw.settings())
    try:
        info = vault.get(sent.link_id)
        assert info is not None
        size = sum(o.size for o in info.objects)
        assert len(vault.store._listing(prefix=sent.link_id + "/")) == len(info.objects)  # type: ignore[attr-defined]
        assert pli("links", "revoke", "-c", config, sent.link_id).returncode == 0
        purged = pli("links", "purge", "-c", config)
        assert purged.returncode == 0, purged.stderr
        assert f"{len(info.objects)} object(s), {size} B" in purged.stdout
        assert vault.store._listing(prefix=sent.link_id + "/") == []  # type: ignore[attr-defined]
        assert vault.get(sent.link_id) is None
    finally:
        vault.close()
