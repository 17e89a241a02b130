"""The notice as a phone shows it: the HTML part of a real notice (the shipped templates,
rendered by the Protector) opened in headless Chromium emulating a 390 px wide phone,
which lays a page without a viewport meta out 980 px wide, as phones do. Nothing may be
wider than the screen, the button must be a comfortable target (44 px, Apple's and the
WCAG's minimum) and the text at least 16 px. Screenshots go to test-artifacts/notice/."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.preflight import template_dirs
from gateway.transform import Protector
from gateway.vault import Vault
from tests.portal.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support import make_gateway
from tests.transform.test_protect import original, protect

WIDTH = 390  # an iPhone 12 to 15, in CSS pixels
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "notice"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (scripts/bootstrap test installs it)",
)


@pytest.fixture(scope="module")
def phone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": WIDTH, "height": 844},
                                      device_scale_factor=3, is_mobile=True, has_touch=True,
                                      java_script_enabled=True)
        try:
            yield context
        finally:
            context.close()
            browser.close()


def notice_html(tmp_path: Path, language: str) -> str:
    gw = make_gateway(tmp_path / "pli", policy=None)
    config = gw.config.read_text()
    config = config.replace('name = "Votre cabinet"', 'name = "Cabinet du Dr Martin"')
    config = config.replace('contact = ""', 'contact = "01 23 45 67 89"')
    gw.config.write_text(config)
    settings = gw.settings()
    protector = Protector(Vault(settings.vault_dir), settings, template_dirs(settings),
                          tag_names=lambda: frozenset({"code"}))
    result = protect(protector, original(), language=language)
    notice = email.message_from_bytes(result.outgoing[0].content, policy=email.policy.default)
    part = notice.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


LAYOUT = """() => {
  const box = e => e.getBoundingClientRect();
  const texts = [...document.body.querySelectorAll('*')].filter(e =>
      [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()));
  const button = document.querySelector('a[href*="/l/"]');
  return {
    layoutWidth: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    widest: Math.max(...[...document.body.querySelectorAll('*')].map(e => box(e).right)),
    button: {height: box(button).height, width: box(button).width},
    smallest: Math.min(...texts.map(e => parseFloat(getComputedStyle(e).fontSize))),
  };
}"""


@pytest.mark.parametrize("language", ["fr", "en"])
def test_the_notice_fits_a_390_px_phone_with_a_big_enough_button_and_text(
        phone: Any, tmp_path: Path, language: str) -> None:
    page = phone.new_page()
    try:
        page.set_content(notice_html(tmp_path, language))
        layout = page.evaluate(LAYOUT)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"notice-{language}-{WIDTH}px.png"), full_page=True)
    finally:
        page.close()
    assert layout["layoutWidth"] == WIDTH, "laid out wider than the phone (no viewport meta?)"
    assert layout["scrollWidth"] <= WIDTH and layout["widest"] <= WIDTH + 0.5, layout
    assert layout["button"]["height"] >= 44, layout
    assert layout["smallest"] >= 16, layout


@pytest.mark.parametrize("language", ["fr", "en"])
def test_the_notice_names_the_practice_in_sentences_that_read_right(
        tmp_path: Path, language: str) -> None:
    """No "de Cabinet du Dr Martin": the name stands where French needs no article."""
    html = notice_html(tmp_path, language)
    if language == "fr":
        assert "Expéditeur&nbsp;: <strong>Cabinet du Dr Martin</strong>" in html
        assert "de Cabinet" not in html
        assert "<title>Message sécurisé : Cabinet du Dr Martin</title>" in html
    else:
        assert "Cabinet du Dr Martin has sent you a confidential message" in html
