"""A secure reply over HTTP: sealed by the client, checked as it streams, kept only whole
and within bounds, and sent back along the thread alone, never to an address the
request names; refused for a link that no longer works, or too often."""

from __future__ import annotations

import email
import email.policy
import io
import json
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from structlog.testing import capture_logs

from gateway.outbox import Outbox
from gateway.preflight import template_dirs
from gateway.spool.store import Spool
from gateway.transform.sender import SenderMail
from gateway.vault import LinkOptions, Manifest, SealedLink, SealFile, Vault
from gateway.vault.format import Manifest as Sealed
from gateway.vault.format import (
    ManifestFile,
    b64url_decode,
    b64url_encode,
    derive_keys,
    encode_manifest,
    encrypt_object,
)
from tests.portal.helpers import run, serve
from tests.support import ADDRESS, make_gateway

PATIENT = "patient@gmail.com"
TEXT = "Voici l'ordonnance SentinelReplyR1."
NAMES = ("SentinelNameR2.pdf", "photo-SentinelNameR3.jpg")
DATA = (b"%PDF-1.4\nSentinelBytesR4\n%%EOF\n", bytes(range(256)) * 300)


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        gw = make_gateway(tmp_path / "pli", policy=None)
        self.settings = gw.settings()
        self.vault = Vault(self.settings.vault_dir)
        self.spool = Spool(self.settings.spool_dir)
        self.spool.create()
        self.outbox = Outbox(self.spool, self.vault,
                             SenderMail(self.settings, template_dirs(self.settings)))

    def seal(self, *, code: str | None = None, files: int = 3,
             max_bytes: int = 1_000_000) -> SealedLink:
        return self.vault.seal(
            Manifest(sender=f"Dr Martin <{ADDRESS}>", subject="Résultats", date="",
                     text="Bonjour"),
            [SealFile("a.pdf", "application/pdf", "application/pdf", b"%PDF")],
            sender=ADDRESS, recipient=PATIENT, expires_at=time.time() + 86400,
            download_limit=5, access_code=code,
            options=LinkOptions(reply_max_files=files, reply_max_bytes=max_bytes))

    def queued(self) -> list[tuple[str, list[str], bytes]]:
        out = []
        for queue_id in self.spool.ids():
            message = self.spool.load(queue_id)
            assert message is not None
            out.append((message.mail_from, [r.address for r in message.recipients],
                        self.spool.content(queue_id)))
        return out


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def sealed_reply(files: tuple[bytes, ...] = DATA, names: tuple[str, ...] = NAMES,
                 text: str = TEXT) -> tuple[str, str, list[tuple[str, bytes]]]:
    """A reply sealed as the page seals one: (link id, secret, [(object id, ciphertext)])."""
    def new_id() -> str:
        while (made := b64url_encode(secrets.token_bytes(16))).startswith("-"):
            pass
        return made
    link_id, secret = new_id(), b64url_encode(secrets.token_bytes(32))
    keys = derive_keys(b64url_decode(secret, 32), b64url_decode(link_id, 16))
    ids = [new_id() for _ in files]
    listed = tuple(ManifestFile(n, "application/octet-stream", "", len(d), i)
                   for n, d, i in zip(names, files, ids, strict=True))
    plain = encode_manifest(Sealed(sender=PATIENT, subject="Réponse : Résultats", date="",
                                   text=text, html=None, files=listed))
    objects = [("manifest", b"".join(encrypt_object(keys.manifest, "manifest", plain,
                                                    secrets.token_bytes(7))))]
    objects += [(i, b"".join(encrypt_object(keys.content, i, d, secrets.token_bytes(7))))
                for i, d in zip(ids, files, strict=True)]
    return link_id, secret, objects


def form(link_id: str, secret: str, objects: list[tuple[str, bytes]],
         **described: Any) -> FormData:
    data = FormData()
    data.add_field("reply", json.dumps({"link": link_id, "secret": secret,
                                        "objects": [o for o, _ in objects[1:]], **described}))
    for object_id, body in objects:
        data.add_field(object_id, body, filename=object_id,
                       content_type="application/octet-stream")
    return data


async def post(client: Any, link: SealedLink | str, body: Any,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    link_id = link if isinstance(link, str) else link.id
    response = await client.post(f"/api/l/{link_id}/reply", data=body, headers=headers or {})
    return response.status, await response.json()


def link_in(raw: bytes) -> tuple[str, str]:
    found = re.search(rb"/l/([\w-]{22})#([\w-]{43})", raw.replace(b"=\r\n", b""))
    assert found, raw
    return found.group(1).decode(), found.group(2).decode()


def test_a_reply_goes_to_the_links_sender_alone_and_its_link_opens_it(setup: Setup) -> None:
    link = setup.seal()
    reply_id, secret, objects = sealed_reply()

    async def scenario() -> tuple[int, dict[str, Any]]:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            state = await (await client.get(f"/api/l/{link.id}")).json()
            assert state["reply"] == {"from": [PATIENT], "to": [ADDRESS], "max_files": 3,
                                      "max_bytes": 1_000_000, "max_text": 20_000}
            return await post(client, link, form(reply_id, secret, objects))

    with capture_logs() as logs:
        status, answer = run(scenario)
    assert (status, answer) == (200, {"ok": True, "to": [ADDRESS]})
    [(mail_from, recipients, raw)] = setup.queued()
    assert (mail_from, recipients) == (ADDRESS, [ADDRESS])
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["To"] == ADDRESS and parsed["Subject"] == f"Réponse sécurisée de {PATIENT}"
    assert link_in(raw) == (reply_id, secret)
    for sentinel in ("SentinelReplyR1", "SentinelNameR2", "SentinelNameR3", "SentinelBytesR4",
                     link.secret):
        assert sentinel.encode() not in raw, sentinel
    manifest = setup.vault.read_manifest(reply_id, secret)
    assert manifest.text == TEXT and [f.name for f in manifest.files] == list(NAMES)
    for file, data in zip(manifest.files, DATA, strict=True):
        assert b"".join(setup.vault.read_file(reply_id, secret, file.object_id)) == data
    [audited] = [e for e in logs if e["event"] == "portal.reply"]
    assert (audited["link"], audited["reply"], audited["files"]) == (link.id, reply_id, 2)
    assert audited["bytes"] == sum(map(len, DATA))
    assert secret not in json.dumps(logs, default=str)


def test_the_sender_answering_from_the_reply_writes_back_to_the_patient(setup: Setup) -> None:
    link = setup.seal()
    first = sealed_reply()

    async def scenario() -> tuple[int, dict[str, Any]]:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            assert (await post(client, link, form(*first)))[0] == 200
            state = await (await client.get(f"/api/l/{first[0]}")).json()
            assert state["origin"] == "patient"
            assert state["reply"]["to"] == [PATIENT] and state["reply"]["from"] == [ADDRESS]
            return await post(client, first[0], form(*sealed_reply()))

    assert run(scenario) == (200, {"ok": True, "to": [PATIENT]})
    answer = [q for q in setup.queued() if q[1] == [PATIENT]]
    [(mail_from, _, raw)] = answer
    assert mail_from == ADDRESS
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["From"] == ADDRESS and parsed["To"] == PATIENT
    assert str(parsed["Subject"]).startswith("Message sécurisé")
    answer_id, _ = link_in(raw)
    info = setup.vault.get(answer_id)
    assert info is not None and info.origin == "practice" and info.parent == first[0]


@pytest.mark.parametrize("described", [{"to": "someone@evil.example"},
                                       {"recipients": ["someone@evil.example"]},
                                       {"subject": "x"}])
def test_a_reply_that_names_anything_more_is_refused_and_nothing_kept(
        setup: Setup, described: dict[str, Any]) -> None:
    link = setup.seal()
    reply = sealed_reply()

    async def scenario() -> int:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            return (await post(client, link, form(*reply, **described)))[0]

    assert run(scenario) == 400
    assert setup.queued() == [] and setup.vault.get(reply[0]) is None
    assert not (setup.vault.root / "objects" / reply[0]).exists()


def test_a_part_more_than_listed_is_refused_and_nothing_kept(setup: Setup) -> None:
    link = setup.seal()
    reply_id, secret, objects = sealed_reply()
    body = form(reply_id, secret, objects)
    body.add_field("to", "someone@evil.example")

    async def scenario() -> int:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            return (await post(client, link, body))[0]

    assert run(scenario) == 400
    assert setup.queued() == [] and not (setup.vault.root / "objects" / reply_id).exists()
    assert list((setup.vault.root / "tmp").iterdir()) == []


def test_too_many_or_too_large_documents_are_refused_before_being_kept(setup: Setup) -> None:
    few = setup.seal(files=1)
    small = setup.seal(max_bytes=40_000)
    many = sealed_reply()
    big = sealed_reply((b"x" * 60_000,), ("big.bin",))

    async def scenario() -> list[int]:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            return [(await post(client, few, form(*many)))[0],
                    (await post(client, small, form(*big)))[0]]

    with capture_logs() as logs:
        assert run(scenario) == [413, 413]
    assert [e["reason"] for e in logs if e["event"] == "portal.reply_refused"] == [
        "too_large", "too_large"]
    assert setup.queued() == [] and list((setup.vault.root / "tmp").iterdir()) == []
    assert not (setup.vault.root / "objects" / big[0]).exists()


def test_a_body_longer_than_the_link_allows_is_refused_before_a_byte_is_read(
        setup: Setup) -> None:
    link = setup.seal(max_bytes=10_000)

    async def scenario() -> tuple[int, dict[str, Any]]:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            response = await client.post(
                f"/api/l/{link.id}/reply", data=io.BytesIO(b"x" * 2_000_000),
                headers={"Content-Type": "multipart/form-data; boundary=b"})
            return response.status, await response.json()

    assert run(scenario) == (413, {"error": "too_large"})


def test_a_link_that_no_longer_works_or_asks_for_its_code_takes_no_reply(setup: Setup) -> None:
    revoked = setup.seal()
    setup.vault.revoke(revoked.id)
    coded = setup.seal(code="4821")
    closed = setup.seal(files=0, max_bytes=0)

    async def scenario() -> list[int]:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            return [(await post(client, link, form(*sealed_reply())))[0]
                    for link in (revoked, coded, closed)]

    assert run(scenario) == [404, 401, 403]
    assert setup.queued() == [] and setup.vault.index.ids() == {revoked.id, coded.id, closed.id}


def test_a_portal_without_notices_offers_no_reply(setup: Setup) -> None:
    link = setup.seal()

    async def scenario() -> tuple[dict[str, Any], int]:
        async with serve(setup.vault, setup.settings) as client:
            state = await (await client.get(f"/api/l/{link.id}")).json()
            return state, (await post(client, link, form(*sealed_reply())))[0]

    state, status = run(scenario)
    assert "reply" not in state and status == 403


def test_replies_on_one_link_are_limited_per_hour(setup: Setup) -> None:
    link = setup.seal()

    async def scenario() -> list[int]:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            return [(await post(client, link, form(*sealed_reply((b"a",), ("a",)))))[0]
                    for _ in range(6)]

    assert run(scenario) == [200] * 5 + [429]
    assert len(setup.queued()) == 5


def test_replies_from_one_client_are_limited_per_hour_across_links(setup: Setup) -> None:
    links = [setup.seal() for _ in range(3)]

    async def scenario() -> list[int]:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            statuses = []
            for n in range(11):
                reply = sealed_reply((b"a",), ("a",))
                statuses.append((await post(client, links[n % 3], form(*reply),
                                            {"X-Forwarded-For": "203.0.113.7"}))[0])
            statuses.append((await post(client, links[0], form(*sealed_reply((b"a",), ("a",))),
                                        {"X-Forwarded-For": "203.0.113.8"}))[0])
            return statuses

    assert run(scenario) == [200] * 10 + [429, 200]


def test_a_reply_whose_notice_cannot_be_queued_is_not_kept(setup: Setup) -> None:
    link = setup.seal()
    reply = sealed_reply()
    shutil.rmtree(setup.spool.tmp_dir)
    setup.spool.tmp_dir.write_text("not a folder")

    async def scenario() -> int:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            return (await post(client, link, form(*reply)))[0]

    assert run(scenario) == 503
    assert setup.vault.get(reply[0]) is None
    assert not (setup.vault.root / "objects" / reply[0]).exists()
    info = setup.vault.get(link.id)
    assert info is not None and info.replies == 0


def test_a_reply_the_disk_has_no_room_for_is_refused_and_nothing_half_kept(
        setup: Setup, tmp_path: Path) -> None:
    from tests.diskfill import PAGE, leave_free, small_disk

    with small_disk(tmp_path / "disk", "4m") as disk:
        setup.vault = Vault(disk / "vault")
        link = setup.seal()
        reply = sealed_reply((bytes(300_000),), ("scan.bin",))
        leave_free(disk, 16 * PAGE)

        async def scenario() -> tuple[int, dict[str, Any]]:
            async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
                return await post(client, link, form(*reply))

        assert run(scenario) == (503, {"error": "disk_full"})
        assert list((disk / "vault" / "tmp").iterdir()) == []
        assert not (disk / "vault" / "objects" / reply[0]).exists()
        assert setup.queued() == [] and setup.vault.get(reply[0]) is None
