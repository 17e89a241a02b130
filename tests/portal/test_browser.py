"""End to end in headless Chromium: a message goes in through SMTP, the patient opens the
link from the notice, types the code from the sender's receipt, reads the message and
saves each document, byte for byte. Plus the lock after five wrong codes, the expiry
page, a file name made to run script, damaged ciphertext, and the spec's test vector.

Debian's chromium driven by Playwright; nothing is downloaded at run time. Screenshots go
to test-artifacts/portal/ for a person to look at.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.vault import Manifest, SealedLink, SealFile, Vault
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    Provider,
    RunningApp,
    free_port,
    make_gateway,
    wait_until,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
VECTOR = Path(__file__).resolve().parents[1] / "vault" / "vector-v1.json"
OPEN_VECTOR = Path(__file__).with_name("open_vector.js")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (scripts/bootstrap test installs it)",
)

PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n"
       + b"".join(b"%% line %06d of the report\n" % i for i in range(5000)) + b"%%EOF\n")
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
       b"\x00\x00\x00\x1f\x15\xc4\x89" + bytes(range(256)) * 4)
MALICIOUS = "<img src=x onerror=alert(1)>.pdf"
DOCUMENTS = [("compte-rendu opératoire.pdf", "application", "pdf", PDF),
             ("radio-thorax.png", "image", "png", PNG),
             (MALICIOUS, "application", "pdf", b"%PDF-1.4\n% tiny\n%%EOF\n")]
BODY = "Bonjour Madame Dupont,\nvoici le compte rendu et la radio.\nDr Martin"
SUBJECT = "Compte rendu de votre intervention"


@dataclass
class Stack:
    gw: Gateway
    loop: LoopThread
    provider: Provider
    app: RunningApp
    base: str
    links: list[str] = field(default_factory=list)

    @property
    def vault(self) -> Vault:
        return self.app.app.vault


def _point_portal_at(gw: Gateway, port: int) -> None:
    """The notice must link to this test's portal: [portal] url and port in pli.toml."""
    config = gw.config.read_text()
    head, marker, rest = config.partition("[portal]")
    section, following, tail = rest.partition("\n[")
    section = re.sub(r"(?m)^url = .*$", f'url = "http://{HOST}:{port}"', section)
    section = re.sub(r"(?m)^host = .*$", f'host = "{HOST}"', section)
    section = re.sub(r"(?m)^port = .*$", f"port = {port}", section)
    config = head + marker + section + following + tail
    config = re.sub(r'(?m)^name = "Votre cabinet".*$', 'name = "Cabinet Martin"', config)
    config = re.sub(r'(?m)^contact = "".*$', 'contact = "01 23 45 67 89"', config)
    gw.config.write_text(config)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    loop = LoopThread()
    gw = make_gateway(tmp_path_factory.mktemp("e2e") / "pli", policy=None)
    port = free_port()
    _point_portal_at(gw, port)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    app = RunningApp(loop, gw).start()
    stack = Stack(gw, loop, provider, app, f"http://{HOST}:{port}")
    try:
        settings = gw.settings()
        assert settings.portal.url == stack.base  # pli run serves the portal there itself
        yield stack
    finally:
        app.stop()
        provider.stop()
        loop.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            accept_downloads=True, viewport={"width": 360, "height": 800},
            locale="fr-FR", timezone_id="Europe/Paris",
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Watched:
    """A page, with the dialogs (alert) it opened and the script errors it raised."""

    page: Any
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    downloads: list[Any] = field(default_factory=list)

    def check_quiet(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors


@pytest.fixture
def tab(browser: Any) -> Iterator[Watched]:
    page = browser.new_page()
    watched = Watched(page)

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: Any) -> None:
        # Chromium logs every 4xx answer (a wrong code, the expiry page); those are expected.
        if message.type == "error" and not message.text.startswith(
                "Failed to load resource: the server responded with a status of 4"):
            watched.errors.append(message.text)

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    page.on("console", on_console)
    page.on("download", lambda download: watched.downloads.append(download))
    try:
        yield watched
    finally:
        page.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def save_by_clicking(page: Any, button: Any) -> bytes:
    """Click a document's button as a person would, and return the file it saved.

    Chromium drops an 11th download that starts right after ten others (measured here:
    10 of 14 saved when clicked back to back, 25 of 25 with a tenth of a second between
    clicks), so the test leaves a person's pause between clicks."""
    page.wait_for_timeout(250)
    with page.expect_download() as saved:
        button.click()
    return Path(saved.value.path()).read_bytes()


def send(gw: Gateway, documents: list[tuple[str, str, str, bytes]] = DOCUMENTS) -> None:
    message = EmailMessage()
    message["From"] = f"Dr Martin <{ADDRESS}>"
    message["To"] = "Mme Dupont <patient@gmail.com>"
    message["Subject"] = SUBJECT
    message["Date"] = formatdate(localtime=True)
    message.set_content(BODY)
    for name, maintype, subtype, data in documents:
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        client.send_message(message)


@dataclass
class Sent:
    url: str  # the link in the notice, with its key
    link_id: str
    code: str  # from the sender's receipt


def send_and_receive(stack: Stack,
                     documents: list[tuple[str, str, str, bytes]] = DOCUMENTS) -> Sent:
    """Send a message to a patient through Pli; the link from the notice and the code
    from the receipt the provider received."""
    before = len(stack.provider.received)
    send(stack.gw, documents)
    received = wait_until(lambda: len(stack.provider.received) >= before + 2
                          and stack.provider.received[before:])
    by_rcpt = {tuple(r.rcpt_tos): r.content for r in received}
    notice = text_of(by_rcpt[("patient@gmail.com",)])
    receipt = text_of(by_rcpt[(ADDRESS,)])
    found = re.search(re.escape(stack.base) + r"/l/([A-Za-z0-9_-]{22})#([A-Za-z0-9_-]{43})",
                      notice)
    assert found, notice
    code_found = re.search(r"(?m)^\s+(\d{6})\s*$", receipt)
    assert code_found, receipt
    assert "chaque document peut être téléchargé 5 fois au plus" in notice, notice
    return Sent(found.group(0), found.group(1), code_found.group(1))


def text_of(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    part = parsed.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def seal_direct(vault: Vault, *, code: str | None, expires_in: float = 86400.0,
                files: tuple[tuple[str, bytes], ...] = (("lettre.pdf", PDF),),
                date: str = "") -> SealedLink:
    return vault.seal(
        Manifest(sender=f"Dr Martin <{ADDRESS}>", subject="Lettre", date=date,
                 text="Bonjour", html=None),
        [SealFile(name, "application/pdf", "application/pdf", data) for name, data in files],
        sender=ADDRESS, recipient="patient@gmail.com", expires_at=time.time() + expires_in,
        download_limit=5, access_code=code,
    )


def test_a_message_sent_through_smtp_opens_in_the_browser_with_the_code(
        stack: Stack, tab: Watched) -> None:
    sent = send_and_receive(stack)
    url, link_id, code = sent.url, sent.link_id, sent.code
    page = tab.page

    page.goto(url)
    code_input = page.locator("#code")
    code_input.wait_for(state="visible")
    assert "#" not in page.url, "the key is taken out of the address bar"
    assert page.evaluate("document.activeElement.id") == "code"
    assert page.locator("label[for=code]").inner_text() == "Code d'accès"
    shot(page, "code-step.png")

    page.keyboard.type("000000" if code != "000000" else "111111")
    page.keyboard.press("Enter")
    page.locator("#code-error").filter(has_text="4 essais").wait_for()
    assert page.evaluate("document.activeElement.id") == "code"
    shot(page, "code-step-wrong-code.png")

    page.keyboard.type(code)  # the wrong code is selected: typing replaces it
    page.keyboard.press("Enter")
    page.locator("#message").wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "subject"
    assert page.locator("#subject").inner_text() == SUBJECT
    assert page.locator("#sender").inner_text() == f"Dr Martin <{ADDRESS}>"
    assert page.locator("#body").inner_text().strip() == BODY
    names = page.locator("#documents .name").all_inner_texts()
    assert names == [name for name, *_ in DOCUMENTS]
    infos = page.locator("#documents .info").all_inner_texts()
    assert infos[0].startswith("Document PDF · ") and infos[0].endswith(" ko")
    assert infos[1] == "Image PNG · 1 ko"  # 1 057 bytes
    assert page.locator("#documents .left").all_inner_texts() == [
        "Encore 5 téléchargements possibles."] * 3
    assert "chaque document peut être téléchargé 5 fois au plus" in (
        page.locator("#limits").inner_text())
    assert page.locator("#documents img").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "message-view.png")

    # The first document with the keyboard alone: Tab from the heading, then Enter.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "download"
    with page.expect_download() as first:
        page.keyboard.press("Enter")
    saved = [first.value]
    for index in (1, 2):
        with page.expect_download() as later:
            page.locator("#documents .download").nth(index).click()
        saved.append(later.value)
    for download, (name, _, _, data) in zip(saved, DOCUMENTS, strict=True):
        assert Path(download.path()).read_bytes() == data, name
    assert saved[0].suggested_filename == DOCUMENTS[0][0]
    assert saved[1].suggested_filename == DOCUMENTS[1][0]
    page.locator("#documents .progress").nth(2).filter(has_text="Enregistré").wait_for()
    assert page.locator("#documents .left").all_inner_texts() == [
        "Encore 4 téléchargements possibles."] * 3
    shot(page, "message-view-downloaded.png")

    info = stack.vault.get(link_id)
    assert info is not None and info.downloads == 3 and info.failed_attempts == 1
    assert [f.downloads for f in info.files] == [1, 1, 1]
    tab.check_quiet()

    # Reloading cannot bring the key back: it was removed from the address.
    page.reload()
    page.locator("#problem").wait_for(state="visible")
    assert "incomplet" in page.locator("#problem-text").inner_text()


def test_a_message_with_more_than_five_documents_opens_whole_each_with_its_count(
        stack: Stack, tab: Watched) -> None:
    """Seven attachments under the default policy (5 downloads per document): every one
    downloads, each says what it has left, and one used up leaves the others be."""
    documents = [(f"analyse-{n}.pdf", "application", "pdf",
                  PDF.replace(b"report", b"rapport %d" % n)) for n in range(7)]
    sent = send_and_receive(stack, documents)
    page = tab.page
    page.goto(sent.url)
    page.locator("#code").fill(sent.code)
    page.locator("#code-submit").click()
    page.locator("#message").wait_for(state="visible")
    assert page.locator("#documents .name").all_inner_texts() == [d[0] for d in documents]
    buttons = page.locator("#documents .download")
    left = page.locator("#documents .left")
    progress = page.locator("#documents .progress")
    for index, (name, _, _, data) in enumerate(documents):
        assert save_by_clicking(page, buttons.nth(index)) == data, name
        progress.nth(index).filter(has_text="Enregistré").wait_for()
    assert left.all_inner_texts() == ["Encore 4 téléchargements possibles."] * 7
    shot(page, "seven-documents.png")

    for remaining in (3, 2, 1, 0):
        assert save_by_clicking(page, buttons.first) == documents[0][3]
        left.first.filter(has_text=(f"Encore {remaining} téléchargement" if remaining
                                    else "Plus aucun téléchargement possible.")).wait_for()
    page.wait_for_function("document.querySelector('#documents .download').disabled")
    assert not buttons.nth(1).is_disabled()
    assert left.all_inner_texts()[1:] == ["Encore 4 téléchargements possibles."] * 6
    assert save_by_clicking(page, buttons.nth(6)) == documents[6][3]
    left.nth(6).filter(has_text="Encore 3 téléchargements possibles.").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "seven-documents-one-used-up.png")

    info = stack.vault.get(sent.link_id)
    assert info is not None and [f.downloads for f in info.files] == [5, 1, 1, 1, 1, 1, 2]
    assert stack.vault.status(sent.link_id) == "ok"
    tab.check_quiet()


def test_the_sixth_wrong_code_is_refused_in_english_too(stack: Stack, tab: Watched) -> None:
    link = seal_direct(stack.vault, code="RIGHT42")
    page = tab.page
    # As an English-speaking browser would ask (the profile itself is French).
    page.route("**/*", lambda route: route.continue_(
        headers={**route.request.headers, "accept-language": "en-GB,en;q=0.9"}))
    page.goto(link.fragment_url(stack.base))
    page.locator("#code").wait_for(state="visible")
    assert page.locator("html").get_attribute("lang") == "en"
    for remaining in (4, 3, 2, 1):
        page.locator("#code").fill("WRONG")
        page.locator("#code-submit").click()
        expected = f"Wrong code. {remaining} {'tries' if remaining > 1 else 'try'} left."
        page.locator("#code-error").filter(has_text=expected).wait_for()
    page.locator("#code").fill("WRONG")
    page.locator("#code-submit").click()
    page.locator("#problem").wait_for(state="visible")
    assert "locked" in page.locator("#problem-text").inner_text()
    assert page.locator("#code-step").is_hidden()
    sixth = page.evaluate("""async (id) => {
        const answers = [];
        for (const code of ["WRONG", "RIGHT42"]) {
            const r = await fetch(`/api/l/${id}/code`, {method: "POST",
                headers: {"Content-Type": "application/json"}, body: JSON.stringify({code})});
            answers.push([r.status, (await r.json()).state]);
        }
        return answers;
    }""", link.id)
    assert sixth == [[404, "unavailable"], [404, "unavailable"]]
    info = stack.vault.get(link.id)
    assert info is not None and info.locked and info.failed_attempts == 5
    tab.check_quiet()


def test_an_expired_link_shows_the_page_that_says_so(stack: Stack, tab: Watched) -> None:
    link = seal_direct(stack.vault, code=None, expires_in=-60)
    page = tab.page
    response = page.goto(link.fragment_url(stack.base))
    assert response is not None and response.status == 404
    assert page.locator("h1").inner_text() == "Ce lien n'est plus valable"
    assert "Cabinet Martin au 01 23 45 67 89" in page.locator("main").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "expired.png")
    tab.check_quiet()


def without_service_worker(page: Any) -> None:
    """As a browser without service workers: the page keeps the document in memory,
    then saves it, instead of streaming it to the file."""
    page.add_init_script(
        "Object.defineProperty(navigator, 'serviceWorker', { get: () => undefined });")


@pytest.mark.parametrize("path", ["streamed", "in memory"])
def test_a_damaged_document_shows_an_error_and_nothing_is_saved(
        stack: Stack, tab: Watched, path: str) -> None:
    """Streamed, the file is written as records open: the damaged one breaks the download
    off, which the browser marks as failed (no file under the document's name); in
    memory, nothing is saved at all."""
    if path == "in memory":
        without_service_worker(tab.page)
    link = seal_direct(stack.vault, code=None, files=(("lettre.pdf", PDF),))
    info = stack.vault.get(link.id)
    assert info is not None
    stored = stack.gw.settings().vault_dir / "objects" / link.id / info.objects[1].id
    damaged = bytearray(stored.read_bytes())
    damaged[70_000] ^= 0x01  # inside the second record
    stored.write_bytes(bytes(damaged))
    page = tab.page
    page.goto(link.fragment_url(stack.base))
    page.locator("#documents .download").first.click()
    error = page.locator("#documents .progress.error")
    error.wait_for()
    assert "endommagé" in error.inner_text()
    page.wait_for_timeout(300)
    if path == "streamed":
        [download] = tab.downloads
        assert download.failure() is not None
    else:
        assert tab.downloads == []
    tab.check_quiet()


def test_a_download_cut_short_goes_on_where_it_stopped_and_counts_once(
        stack: Stack, tab: Watched) -> None:
    """The answer stops after 70 000 bytes, then the connection fails outright: the page
    asks again from byte 70 000 under the same grant, saves the file whole, and the
    server counted one download."""
    link = seal_direct(stack.vault, code=None)
    info = stack.vault.get(link.id)
    assert info is not None
    object_id = info.files[0].id
    size = (stack.gw.settings().vault_dir / "objects" / link.id / object_id).stat().st_size
    assert size > 100_000
    page = tab.page
    ranges: list[str | None] = []
    grants: list[str] = []

    def on_object(route: Any) -> None:
        ranges.append(route.request.headers.get("range"))
        if len(ranges) == 1:  # the server's answer, of which only the start arrives
            response = route.fetch()
            assert response.status == 206
            body = response.body()[:70_000]
            route.fulfill(status=206, body=body, headers={
                **response.headers, "content-length": str(len(body)),
                "content-range": f"bytes 0-69999/{size}"})
        elif len(ranges) == 2:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(f"**/api/l/{link.id}/o/{object_id}", on_object)
    page.on("request", lambda r: grants.append(r.method) if r.url.endswith("/grant") else None)
    page.goto(link.fragment_url(stack.base))
    assert save_by_clicking(page, page.locator("#documents .download").first) == PDF
    page.locator("#documents .progress").first.filter(has_text="Enregistré").wait_for()
    assert ranges == ["bytes=0-", "bytes=70000-", "bytes=70000-"]
    assert grants == ["POST"]
    assert page.locator("#documents .left").first.inner_text() == (
        "Encore 4 téléchargements possibles.")
    info = stack.vault.get(link.id)
    assert info is not None and info.files[0].downloads == 1
    assert tab.dialogs == []
    assert [e for e in tab.errors if "ERR_CONNECTION_RESET" not in e] == []


FRENCH_DAYS = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
FRENCH_MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
                 "septembre", "octobre", "novembre", "décembre"]


def french_time(moment: datetime) -> str:
    """As the page writes a date in French: "mardi 1 décembre 2026 à 09:15"."""
    return (f"{FRENCH_DAYS[moment.weekday()]} {moment.day} {FRENCH_MONTHS[moment.month - 1]}"
            f" {moment.year} à {moment:%H:%M}")


@pytest.mark.parametrize("date", ["", "Mon, 02 Nov 2026 09:15:00 +0100"],
                         ids=["no Date header", "its Date header"])
def test_the_date_is_the_messages_or_else_when_pli_received_it(
        stack: Stack, tab: Watched, date: str) -> None:
    """A message sent without a Date: header showed "Date" and nothing after it."""
    link = seal_direct(stack.vault, code=None, date=date)
    info = stack.vault.get(link.id)
    assert info is not None
    paris = ZoneInfo("Europe/Paris")  # the browser's time zone in these tests
    expected = (french_time(parsedate_to_datetime(date).astimezone(paris)) if date
                else french_time(datetime.fromtimestamp(info.created, paris)))
    page = tab.page
    page.goto(link.fragment_url(stack.base))
    page.locator("#message").wait_for(state="visible")
    assert page.locator("#date-label").is_visible()
    assert page.locator("#date").inner_text() == expected
    tab.check_quiet()


def test_the_spec_test_vector_opens_in_the_browser(stack: Stack, tab: Watched) -> None:
    vector = json.loads(VECTOR.read_text())
    page = tab.page
    page.goto(f"{stack.base}/l/AAAAAAAAAAAAAAAAAAAAAA")  # any page of the portal, its CSP
    result = page.evaluate(OPEN_VECTOR.read_text(), vector)
    assert result["manifestKey"] == vector["manifest_key_hex"]
    assert result["contentKey"] == vector["content_key_hex"]
    assert result["manifestSha"] == vector["manifest"]["plaintext_sha256"]
    assert result["manifest"] == json.loads(vector["manifest"]["json"])
    assert result["files"] == [f["plaintext_sha256"] for f in vector["files"]]
    assert set(result["refusals"].values()) == {"VaultError"}, result["refusals"]
    assert result["canonical"] == [True, True, False, False]
    tab.check_quiet()


TRY_MARKUP = """() => {
  const tried = {};
  try { document.body.insertAdjacentHTML("beforeend", "<b id=injected>x</b>");
        tried.html = "accepted"; } catch (e) { tried.html = e.name; }
  try { window.trustedTypes.createPolicy("another", {createHTML: (s) => s});
        tried.policy = "accepted"; } catch (e) { tried.policy = e.name; }
  tried.injected = document.getElementById("injected") !== null;
  return tried;
}"""


def test_trusted_types_let_no_text_become_markup_and_vouch_only_for_the_worker(
        stack: Stack, tab: Watched) -> None:
    """The README's Content-Security-Policy with Trusted Types, as Chromium enforces it on
    an opened message's page: HTML from a string is refused, and no policy other than the
    service worker's can be made to vouch for one."""
    link = seal_direct(stack.vault, code=None)
    page = tab.page
    page.goto(link.fragment_url(stack.base))
    page.locator("#message").wait_for(state="visible")  # the page's own script works
    assert page.evaluate(TRY_MARKUP) == {"html": "TypeError", "policy": "TypeError",
                                         "injected": False}
    tab.errors.clear()  # Chromium reports the two refusals it was asked for
    tab.check_quiet()
