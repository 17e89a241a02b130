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
from tests.portal.test_browser import CHROMIUM, Watched, _point_portal_at, browser, shot, tab
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    PliProcess,
    Provider,
    free_port,
    make_gateway,
    wait_for_port,
    wait_until,
)

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


REPLY_VECTOR = Path(__file__).resolve().parents[1] / "vault" / "vector-reply-v1.json"
SEAL_REPLY_VECTOR = Path(__file__).with_name("seal_reply_vector.js")


def test_the_browser_seals_the_reply_vector_byte_for_byte(stack: Stack, tab: Watched) -> None:
    import json

    vector = json.loads(REPLY_VECTOR.read_text(encoding="utf-8"))
    page = tab.page
    page.goto(f"{stack.base}/l/AAAAAAAAAAAAAAAAAAAAAA")  # any page of the portal, its CSP
    result = page.evaluate(SEAL_REPLY_VECTOR.read_text(encoding="utf-8"), vector)
    assert result == {
        "manifestPlaintext": True, "manifest": True, "files": [True, True],
        "opened": [vector["manifest"]["sender"], vector["manifest"]["subject"],
                   vector["manifest"]["text"], 2],
        "ids": True, "bases": True, "secret": True,
    }
    tab.check_quiet()


REPLY_TEXT = "Bonjour Docteur,\nvoici l'ordonnance signée SentinelReplyB1.\nMme Dupont"
REPLY_FILES = [("SentinelNameB2 ordonnance.pdf", "application/pdf",
                b"%PDF-1.4\n% SentinelBytesB3\n" + bytes(range(256)) * 700 + b"%%EOF\n"),
               ("SentinelNameB4 photo.jpg", "image/jpeg",
                b"\xff\xd8\xff\xe0" + bytes(i * 7 % 256 for i in range(90_000)))]
REPLY_SENTINELS = ("SentinelReplyB1", "SentinelNameB2", "SentinelBytesB3", "SentinelNameB4")


def write_reply(page: Any, text: str = REPLY_TEXT) -> None:
    page.locator("#reply-open").click()
    page.locator("#reply-text").fill(text)
    page.locator("#reply-files").set_input_files(
        [{"name": name, "mimeType": kind, "buffer": data} for name, kind, data in REPLY_FILES])


def test_a_reply_with_two_files_reaches_the_sender_whose_link_opens_the_exact_bytes(
        stack: Stack, browser: Any) -> None:
    sent = send(stack, SUBJECT)
    patient, sender = browser.new_page(), browser.new_page()
    try:
        open_message(patient, sent)
        reply = patient.locator("#reply")
        reply.wait_for(state="visible")
        assert patient.locator("#reply-to").inner_text().startswith(
            f"Votre réponse sera envoyée à {ADDRESS} seulement")
        # Nowhere to type an address: a text, files, and the button.
        assert reply.locator("input:not([type=file]), select").count() == 0
        before = len(stack.provider.received)
        write_reply(patient)
        shot(patient, "reply-form.png")
        patient.locator("#reply-send").click()
        patient.locator("#reply-status").filter(
            has_text="Votre réponse a été envoyée").wait_for()
        shot(patient, "reply-sent.png")
        [notice] = notices_since(stack, before, 1)
        flat = notice.replace(b"=\r\n", b"")
        for sentinel in (*REPLY_SENTINELS, *SENTINELS, sent.secret, sent.code):
            assert sentinel.encode() not in flat, sentinel
        words = text_of(notice)
        assert "patient@gmail.com a répondu de façon sécurisée à votre message" in words
        found = re.search(re.escape(stack.base) + r"/l/([\w-]{22})#[\w-]{43}", words)
        assert found and sent.link_id in words

        # The sender opens the reply with the thread's code, and saves both files.
        sender.goto(found.group(0))
        sender.locator("#code").fill(sent.code)
        sender.locator("#code-submit").click()
        sender.locator("#message").wait_for(state="visible")
        assert sender.locator("#sender").inner_text() == "patient@gmail.com"
        assert sender.locator("#subject").inner_text() == f"Réponse : {SUBJECT}"
        assert sender.locator("#body").inner_text().strip() == REPLY_TEXT
        assert sender.locator("#documents .name").all_inner_texts() == [
            name for name, _, _ in REPLY_FILES]
        for index, (_, _, data) in enumerate(REPLY_FILES):
            sender.wait_for_timeout(250)
            with sender.expect_download() as saved:
                sender.locator("#documents .download").nth(index).click()
            assert Path(saved.value.path()).read_bytes() == data
        shot(sender, "reply-read.png")
        info = stack.vault.get(found.group(1))
        assert info is not None and info.parent == sent.link_id and info.origin == "patient"

        # And answers from there, which goes back to the patient alone.
        before = len(stack.provider.received)
        assert sender.locator("#reply-to").inner_text().startswith(
            "Votre réponse sera envoyée à patient@gmail.com seulement")
        sender.locator("#reply-open").click()
        sender.locator("#reply-text").fill("Bien reçu, merci.")
        sender.locator("#reply-send").click()
        sender.locator("#reply-status").filter(has_text="envoyée à patient@gmail.com").wait_for()
        answer = wait_until(lambda: stack.provider.received[before:])[0]
        assert answer.rcpt_tos == ["patient@gmail.com"] and answer.mail_from == ADDRESS
        assert re.search(re.escape(stack.base) + r"/l/[\w-]{22}#[\w-]{43}", text_of(answer.content))
    finally:
        patient.close()
        sender.close()


def test_a_reply_cannot_be_sent_to_any_other_address(stack: Stack, tab: Watched) -> None:
    """The page names no address, and a request that does is refused whole: the only
    mail a reply makes goes to the link's own sender."""
    sent = send(stack, SUBJECT)
    page = tab.page
    open_message(page, sent)
    page.locator("#reply").wait_for(state="visible")
    before = len(stack.provider.received)
    statuses = page.evaluate("""async () => {
        const vault = await import("/static/vault.js");
        const { sendReply } = await import("/static/reply.js");
        const api = location.pathname.replace("/l/", "/api/l/") + "/reply";
        const state = await (await fetch(location.pathname.replace("/l/", "/api/l/"))).json();
        const forged = { ...state.reply, to: ["someone@evil.example"] };
        const out = [];
        // The page's own code with a forged offer: the server decides where it goes.
        out.push((await sendReply(api, forged, { subject: "x", text: "one", files: [] })).to);
        // A request naming an address, or carrying one more part, is refused whole.
        for (const extra of [{ to: "someone@evil.example" }, { cc: ["a@evil.example"] }]) {
            const form = new FormData();
            form.append("reply", JSON.stringify({ link: vault.newId(),
                secret: vault.newSecret(), objects: [], ...extra }));
            form.append("manifest", new Blob([new Uint8Array(560)]), "manifest");
            out.push((await fetch(api, { method: "POST", body: form })).status);
        }
        const form = new FormData();
        form.append("reply", JSON.stringify({ link: vault.newId(), secret: vault.newSecret(),
            objects: [] }));
        form.append("to", "someone@evil.example");
        out.push((await fetch(api, { method: "POST", body: form })).status);
        return out;
    }""")
    assert statuses == [[ADDRESS], 400, 400, 400]
    got = wait_until(lambda: stack.provider.received[before:])
    time.sleep(1.0)  # nothing else comes
    assert [r.rcpt_tos for r in stack.provider.received[before:]] == [[ADDRESS]]
    assert all("evil" not in a for r in got for a in r.rcpt_tos)
    tab.check_quiet()


def test_a_reply_after_revocation_is_refused(stack: Stack, browser: Any) -> None:
    sent = send(stack, SUBJECT)
    patient, sender = browser.new_page(), browser.new_page()
    try:
        open_message(patient, sent)
        patient.locator("#reply").wait_for(state="visible")
        write_reply(patient)
        sender.goto(sent.manage)
        sender.locator("#revoke").click()
        sender.locator("#confirm-revoke").click()
        sender.locator("#status").filter(has_text="le lien est révoqué").wait_for()
        before = len(stack.provider.received)
        patient.locator("#reply-send").click()  # the reply was written before: too late
        patient.locator("#problem").wait_for(state="visible")
        assert "plus valable" in patient.locator("#problem-text").inner_text()
        time.sleep(1.0)
        assert stack.provider.received[before:] == []
        info = stack.vault.get(sent.link_id)
        assert info is not None and info.revoked is not None and info.replies == 0
        assert [i.id for i in stack.vault.links() if i.parent == sent.link_id] == []
    finally:
        patient.close()
        sender.close()


def seal_large(vault: Vault, size: int, name: str = "scanner 2026 é.bin") -> tuple[Any, bytes]:
    from gateway.vault import Manifest, SealFile

    data = bytes((i * 31 + i // 65536) % 251 for i in range(size))
    link = vault.seal(Manifest(sender=f"Dr Martin <{ADDRESS}>", subject="Scanner", date=""),
                      [SealFile(name, "application/octet-stream", "application/octet-stream",
                                data)],
                      sender=ADDRESS, recipient="patient@gmail.com",
                      expires_at=time.time() + 3600, download_limit=5, access_code=None)
    return link, data


def test_a_document_streamed_to_the_file_is_saved_byte_for_byte(stack: Stack, tab: Watched,
                                                                browser: Any) -> None:
    """Chromium has service workers: the page streams the document to the file as it
    decrypts it; a browser without keeps the other path. Both save the same bytes."""
    link, data = seal_large(stack.vault, 3 * 1024 * 1024 + 12_345)
    page = tab.page
    page.goto(link.fragment_url(stack.base))
    with page.expect_download() as saved:
        page.locator("#documents .download").first.click()
    streamed = saved.value
    assert streamed.url.startswith(f"{stack.base}/static/save/"), streamed.url
    assert streamed.suggested_filename == "scanner 2026 é.bin"
    assert Path(streamed.path()).read_bytes() == data
    page.locator("#documents .progress").first.filter(has_text="Enregistré").wait_for()
    tab.check_quiet()

    other = browser.new_page()
    try:
        other.add_init_script(
            "Object.defineProperty(navigator, 'serviceWorker', { get: () => undefined });")
        other.goto(link.fragment_url(stack.base))
        with other.expect_download() as kept:
            other.locator("#documents .download").first.click()
        assert kept.value.url.startswith("blob:")
        assert Path(kept.value.path()).read_bytes() == data
    finally:
        other.close()
    info = stack.vault.get(link.id)
    assert info is not None and info.files[0].downloads == 2
