"""The sender's notices: the portal tells the outbox what the patient did, the outbox
writes the notice from the link's row and queues it in the spool, once per event, with
nothing of the message in it; a notice that cannot be queued never fails the patient."""

from __future__ import annotations

import email
import email.policy
import shutil
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.outbox import Outbox
from gateway.preflight import template_dirs
from gateway.spool.store import Spool
from gateway.transform.sender import SenderMail
from gateway.vault import LinkOptions, Manifest, SealedLink, SealFile, Vault
from tests.portal.helpers import grant, run, serve
from tests.support import ADDRESS, Gateway, make_gateway

SUBJECT = "Résultats SentinelSubjectN1"
BODY = "Le bilan SentinelBodyN2 est normal."
FILE_NAME = "SentinelFileN3.pdf"


class Setup:
    def __init__(self, gw: Gateway) -> None:
        self.settings = gw.settings()
        self.vault = Vault(self.settings.vault_dir)
        self.spool = Spool(self.settings.spool_dir)
        self.spool.create()
        self.submitted: list[tuple[str, str]] = []
        self.outbox = Outbox(self.spool, self.vault,
                             SenderMail(self.settings, template_dirs(self.settings)),
                             submit=lambda q, s: self.submitted.append((q, s)))

    def seal(self, *, notify: tuple[str, ...] = ("opened", "downloaded", "expired"),
             expires_in: float = 86400.0, files: int = 2, language: str = "fr") -> SealedLink:
        return self.vault.seal(
            Manifest(sender=f"Dr Martin <{ADDRESS}>", subject=SUBJECT,
                     date="Mon, 02 Nov 2026 09:15:00 +0100", text=BODY),
            [SealFile(f"{n}-{FILE_NAME}", "application/pdf", "application/pdf",
                      b"%PDF-1.4\nSentinelBodyN2\n%%EOF\n") for n in range(files)],
            sender=ADDRESS, recipient="patient@gmail.com",
            expires_at=time.time() + expires_in, download_limit=3, access_code=None,
            options=LinkOptions(notify=notify, language=language), manage=True)

    def queued(self) -> list[tuple[list[str], str, str]]:
        """(recipients, subject, text) of every message in the spool."""
        out = []
        for queue_id in self.spool.ids():
            message = self.spool.load(queue_id)
            assert message is not None
            parsed = email.message_from_bytes(self.spool.content(queue_id),
                                              policy=email.policy.default)
            body = parsed.get_body(("plain",))
            assert body is not None
            out.append(([r.address for r in message.recipients], str(parsed["Subject"]),
                        str(body.get_content())))
        return out


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(make_gateway(tmp_path / "pli", policy=None))


def assert_nothing_of_the_message(setup: Setup, link: SealedLink) -> None:
    for queue_id in setup.spool.ids():
        raw = setup.spool.content(queue_id)
        for sentinel in ("SentinelSubjectN1", "SentinelBodyN2", "SentinelFileN3", link.secret,
                         link.manage_secret or "-"):
            assert sentinel.encode() not in raw, sentinel


def test_the_first_opening_and_each_download_reach_the_sender_once_each(setup: Setup) -> None:
    link = setup.seal()
    info = setup.vault.get(link.id)
    assert info is not None
    second = info.files[1].id

    async def scenario() -> None:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            for _ in range(2):  # read twice: opened once
                response = await client.get(f"/api/l/{link.id}/o/manifest")
                assert response.status == 200
                await response.read()
            for _ in range(2):
                headers = await grant(client, link, second)
                await (await client.get(f"/api/l/{link.id}/o/{second}", headers=headers)).read()

    run(scenario)
    queued = setup.queued()
    assert [r for r, _, _ in queued] == [[ADDRESS]] * 3
    opened, first, again = sorted(queued, key=lambda q: ("ouvert" not in q[1], q[2]))
    assert opened[1] == "Message ouvert : votre message à patient@gmail.com"
    assert "a ouvert votre message sécurisé pour la première fois" in opened[2]
    assert "Destinataire : patient@gmail.com" in opened[2] and link.id in opened[2]
    assert "Le document 2 sur 2 de votre message sécurisé a été téléchargé (1 fois sur 3" \
        in first[2]
    assert "(2 fois sur 3" in again[2]
    assert_nothing_of_the_message(setup, link)
    assert [s for _, s in setup.submitted] == [ADDRESS] * 3  # handed to delivery at once
    stored = setup.vault.get(link.id)
    assert stored is not None and stored.opened is not None


def test_a_link_whose_sender_asked_for_nothing_sends_nothing_but_notes_the_opening(
        setup: Setup) -> None:
    link = setup.seal(notify=())
    info = setup.vault.get(link.id)
    assert info is not None

    async def scenario() -> None:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            await (await client.get(f"/api/l/{link.id}/o/manifest")).read()
            await grant(client, link, info.files[0].id)

    run(scenario)
    assert setup.spool.ids() == []
    stored = setup.vault.get(link.id)
    assert stored is not None and stored.opened is not None


def test_an_unopened_link_that_expired_is_told_once_in_the_links_language(
        setup: Setup) -> None:
    link = setup.seal(expires_in=-60, language="en")
    opened = setup.seal(expires_in=-60)
    setup.vault.mark_opened(opened.id)
    assert run(setup.outbox.expired_unopened) == 1
    assert run(setup.outbox.expired_unopened) == 0
    [(recipients, subject, text)] = setup.queued()
    assert recipients == [ADDRESS]
    assert subject == "Link expired unopened: your message to patient@gmail.com"
    assert "expired without the message being opened" in text and link.id in text
    assert_nothing_of_the_message(setup, link)


def test_a_notice_that_cannot_be_queued_leaves_the_patients_download_be(setup: Setup) -> None:
    link = setup.seal()
    info = setup.vault.get(link.id)
    assert info is not None
    shutil.rmtree(setup.spool.tmp_dir)
    setup.spool.tmp_dir.write_text("not a folder")  # every queue file write now fails

    async def scenario() -> int:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            manifest = await client.get(f"/api/l/{link.id}/o/manifest")
            await manifest.read()
            headers = await grant(client, link, info.files[0].id)
            document = await client.get(f"/api/l/{link.id}/o/{info.files[0].id}",
                                        headers=headers)
            await document.read()
            return manifest.status + document.status

    with capture_logs() as logs:
        assert run(scenario) == 400
    failed = [e for e in logs if e["event"] == "notice.failed"]
    assert [e["notice"] for e in failed] == ["opened", "downloaded"]
    assert setup.spool.ids() == []


def test_an_expiry_notice_that_cannot_be_queued_is_tried_again_next_time(setup: Setup) -> None:
    link = setup.seal(expires_in=-60)
    tmp = setup.spool.tmp_dir
    shutil.rmtree(tmp)
    tmp.write_text("not a folder")
    with pytest.raises(OSError):
        run(setup.outbox.expired_unopened)
    tmp.unlink()
    tmp.mkdir()
    assert run(setup.outbox.expired_unopened) == 1
    assert [r for r, _, _ in setup.queued()] == [[ADDRESS]]
    assert setup.vault.expired_unopened() == [] and setup.vault.get(link.id) is not None
