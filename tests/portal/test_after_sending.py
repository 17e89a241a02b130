"""After sending, end to end through a real `pli run` and headless Chromium: the sender's
notices of the patient opening the message and downloading a document, with no health
data in them; the sender's revoke link killing the patient's link between two clicks.

A message goes in by SMTP under the default policy (with `[avis]` in its subject), the
notice and the receipt come out at the test's provider, and the browser does what the
patient and the sender would. Screenshots go to test-artifacts/portal/.
"""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from gateway.vault import Vault
from tests.portal.test_browser import (CHROMIUM, Watched, _point_portal_at, browser, shot,
                                       tab)
from tests.support import (ADDRESS, HOST, PASSWORD, USER, Gateway, LoopThread, PliProcess,
                           Provider, free_port, make_gateway, wait_for_port, wait_until)

__all__ = ["browser", "tab"]  # the browser fixtures, shared with test_browser

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (scripts/bootstrap test installs it)",
)

SUBJECT = "Résultats SentinelSubjectA1"
BODY = "Bonjour,\nle bilan SentinelBodyA2 est normal.\nDr Martin"
PDF = (b"%PDF-1.4\n% SentinelBytesA3\n"
       + b"".join(b"%% ligne %06d du compte rendu\n" % i for i in range(3000)) + b"%%EOF\n")
DOCUMENTS = [("SentinelFileA4 bilan.pdf", PDF),
             ("SentinelFileA5 ordonnance.pdf", PDF.replace(b"compte rendu", b"ordonnance"))]
SENTINELS = ("SentinelSubjectA1", "SentinelBodyA2", "SentinelBytesA3", "SentinelFileA4",
             "SentinelFileA5")


@dataclass
class Stack:
    gw: Gateway
    provider: Provider
    base: str

    @property
    def vault(self) -> Vault:
        return Vault(self.gw.settings().vault_dir)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("after")
    loop = LoopThread()
    gw = make_gateway(folder / "pli", policy=None)
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


@dataclass
class Sent:
    link: str  # the patient's link, with its key
    link_id: str
    secret: str
    code: str
    manage: str  # the sender's page, with its own secret
    manage_secret: str


def text_of(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    part = parsed.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def send(stack: Stack, subject: str = SUBJECT + " [avis]") -> Sent:
    before = len(stack.provider.received)
    message = EmailMessage()
    message["From"] = f"Dr Martin <{ADDRESS}>"
    message["To"] = "Mme Dupont <patient@gmail.com>"
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message.set_content(BODY)
    for name, data in DOCUMENTS:
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    with smtplib.SMTP(HOST, stack.gw.submission_port, timeout=10) as client:
        client.starttls(context=stack.gw.client_context())
        client.login(USER, PASSWORD)
        client.send_message(message)
    got = wait_until(lambda: len(stack.provider.received) >= before + 2
                     and stack.provider.received[before:before + 2])
    by_rcpt = {tuple(r.rcpt_tos): r.content for r in got}
    notice, receipt = text_of(by_rcpt[("patient@gmail.com",)]), text_of(by_rcpt[(ADDRESS,)])
    found = re.search(re.escape(stack.base) + r"/l/([\w-]{22})#([\w-]{43})", notice)
    managed = re.search(re.escape(stack.base) + r"/m/([\w-]{22})#([\w-]{43})", receipt)
    code = re.search(r"(?m)^\s+(\d{6})\s*$", receipt)
    assert found and managed and code, receipt
    assert managed.group(1) == found.group(1) and "/m/" not in notice
    said = ("Vous recevrez un avis par e-mail quand le message sera ouvert" if "[avis]" in subject
            else "Vous ne recevrez pas d'avis sur ce message.")
    assert said in " ".join(receipt.split())
    return Sent(found.group(0), found.group(1), found.group(2), code.group(1),
                managed.group(0), managed.group(2))


def open_message(page: Any, sent: Sent) -> None:
    """The patient's link; the code, unless this browser gave it a moment ago."""
    page.goto(sent.link)
    page.locator("#code-step:not([hidden]), #message:not([hidden])").wait_for()
    if page.locator("#code-step").is_visible():
        page.locator("#code").fill(sent.code)
        page.locator("#code-submit").click()
    page.locator("#message").wait_for(state="visible")


def notices_since(stack: Stack, before: int, count: int) -> list[bytes]:
    got = wait_until(lambda: len(stack.provider.received) >= before + count
                     and stack.provider.received[before:], timeout=15)
    assert all(r.rcpt_tos == [ADDRESS] and r.mail_from == ADDRESS for r in got)
    return [r.content for r in got]


def test_the_senders_notices_of_opening_and_downloading_hold_no_health_data(
        stack: Stack, tab: Watched) -> None:
    sent = send(stack)
    page = tab.page
    before = len(stack.provider.received)
    open_message(page, sent)
    assert page.locator("#subject").inner_text() == SUBJECT  # the [avis] tag is gone
    [opened] = notices_since(stack, before, 1)
    with page.expect_download() as saved:
        page.locator("#documents .download").nth(1).click()
    assert Path(saved.value.path()).read_bytes() == DOCUMENTS[1][1]
    [_, downloaded] = notices_since(stack, before, 2)
    opened_text, downloaded_text = text_of(opened), text_of(downloaded)
    assert "a ouvert votre message sécurisé pour la première fois" in opened_text
    assert "Le document 2 sur 2 de votre message sécurisé a été téléchargé (1 fois sur 5" \
        in downloaded_text
    for text in (opened_text, downloaded_text):
        assert "Destinataire : patient@gmail.com" in text and sent.link_id in text
    for raw in (opened, downloaded):
        flat = raw.replace(b"=\r\n", b"")
        for sentinel in (*SENTINELS, sent.secret, sent.manage_secret, sent.code):
            assert sentinel.encode() not in flat, sentinel
        assert "ordonnance" not in text_of(raw) and "bilan" not in text_of(raw)
    # Reading it again tells nothing more.
    open_message(page, sent)
    time.sleep(1.0)
    assert len(stack.provider.received) == before + 2
    info = stack.vault.get(sent.link_id)
    assert info is not None and info.opened is not None
    tab.check_quiet()


def test_the_senders_revoke_link_kills_the_patients_link_between_two_clicks(
        stack: Stack, browser: Any) -> None:
    sent = send(stack, SUBJECT)
    patient, sender = browser.new_page(), browser.new_page()
    try:
        open_message(patient, sent)
        buttons = patient.locator("#documents .download")
        with patient.expect_download() as first:
            buttons.first.click()
        assert Path(first.value.path()).read_bytes() == DOCUMENTS[0][1]

        sender.goto(sent.manage)
        sender.locator("#link").wait_for(state="visible")
        assert "#" not in sender.url, "the sender's secret is taken out of the address bar"
        assert sender.locator("#recipients").inner_text() == "patient@gmail.com"
        assert sender.locator("#state").inner_text() == "Valable"
        assert sender.locator("#downloads").inner_text() == (
            "document 1 : 1 sur 5 ; document 2 : 0 sur 5")
        assert sender.locator("#opened").inner_text() != "Pas encore ouvert"
        assert sender.evaluate("document.documentElement.scrollWidth") <= 360
        shot(sender, "manage.png")
        sender.locator("#revoke").click()
        sender.locator("#confirm").wait_for(state="visible")
        assert stack.vault.status(sent.link_id) == "ok", "nothing happens before the confirmation"
        shot(sender, "manage-confirm.png")
        sender.locator("#confirm-revoke").click()
        sender.locator("#status").filter(has_text="le lien est révoqué").wait_for()
        assert sender.locator("#state").inner_text() == "Révoqué"
        assert sender.locator("#revoke-step").is_hidden()
        shot(sender, "manage-revoked.png")

        buttons.nth(1).click()  # the patient's second click
        patient.locator("#problem").wait_for(state="visible")
        assert "plus valable" in patient.locator("#problem-text").inner_text()
        response = patient.reload()  # the same page as for an expired link
        assert response is not None and response.status == 404
        assert patient.locator("h1").inner_text() == "Ce lien n'est plus valable"
        info = stack.vault.get(sent.link_id)
        assert info is not None and info.revoked is not None
        assert [f.downloads for f in info.files] == [1, 0]
    finally:
        patient.close()
        sender.close()


def test_the_senders_page_extends_the_link_within_the_policys_maxima(
        stack: Stack, tab: Watched) -> None:
    sent = send(stack, SUBJECT + " [expire:3j] [telechargements:2]")
    info = stack.vault.get(sent.link_id)
    assert info is not None and info.download_limit == 2
    assert round((info.expires - info.created) / 86400) == 3
    page = tab.page
    page.goto(sent.manage)
    page.locator("#link").wait_for(state="visible")
    assert "27 jours de plus et 8 téléchargements de plus" in (
        page.locator("#extend-help").inner_text())
    page.locator("#days").fill("4")
    page.locator("#more-downloads").fill("3")
    page.locator("#extend-submit").click()
    page.locator("#status").filter(has_text="prolongé").wait_for()
    after = stack.vault.get(sent.link_id)
    assert after is not None and after.download_limit == 5
    assert round((after.expires - after.created) / 86400) == 7
    assert "document 1 : 0 sur 5" in page.locator("#downloads").inner_text()
    tab.check_quiet()
