"""The portal's answers for every state of a link and every limit, over real HTTP on
127.0.0.1. Nothing here needs a browser: the page's script is tested in test_browser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.vault import Vault
from gateway.vault.format import b64url_decode, decrypt_object, derive_keys
from tests.portal.helpers import (
    CODE,
    DAY,
    PRACTICE,
    enter_code,
    file_id,
    grant,
    make_settings,
    run,
    seal,
    serve,
)

SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def assert_security_headers(headers: object) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value, name  # type: ignore[index]
    csp = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split("; ")}  # type: ignore[index]
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in str(csp) and "'unsafe-eval'" not in str(csp)


# -- the page -------------------------------------------------------------------------

def test_the_page_of_a_usable_link_is_french_by_default_with_strict_headers(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            response = await client.get(f"/l/{link.id}")
            page = await response.text()
            assert response.status == 200
            assert_security_headers(response.headers)
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert '<html lang="fr">' in page
            assert '<script type="module" src="/static/portal.js"></script>' in page
            assert "<script>" not in page and " on" + "click=" not in page
            assert 'for="code"' in page and "Code d'accès" in page
            assert PRACTICE.name in page and PRACTICE.contact in page
    run(scenario)


def test_the_page_is_english_when_the_browser_prefers_english(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            response = await client.get(f"/l/{link.id}",
                                        headers={"Accept-Language": "en-GB,en;q=0.9,fr;q=0.5"})
            page = await response.text()
            assert '<html lang="en">' in page and "Access code" in page
            assert response.headers["Content-Language"] == "en"
            assert "Accept-Language" in response.headers["Vary"]
    run(scenario)


@pytest.mark.parametrize("state", ["unknown", "malformed", "expired", "revoked", "exhausted",
                                   "locked"])
def test_every_link_that_cannot_be_opened_gets_the_same_page_and_status(
        vault: Vault, settings: Settings, state: str) -> None:
    """Ids cannot be probed: unknown, expired, revoked, used up and locked look alike."""
    link = seal(vault, download_limit=1, expires_in=-1 if state == "expired" else DAY)
    link_id = link.id
    if state == "unknown":
        link_id = "AAAAAAAAAAAAAAAAAAAAAA"
    elif state == "malformed":
        link_id = "not-a-link-id"
    elif state == "revoked":
        vault.revoke(link.id)
    elif state == "exhausted":
        assert vault.grant_download(link.id, file_id(vault, link)) == 0
    elif state == "locked":
        for _ in range(5):
            vault.check_code(link.id, "0000")

    async def scenario() -> tuple[int, str, int, object]:
        async with serve(vault, settings) as client:
            page = await client.get(f"/l/{link_id}")
            assert_security_headers(page.headers)
            api = await client.get(f"/api/l/{link_id}")
            return page.status, await page.text(), api.status, await api.json()

    status, page, api_status, api = run(scenario)
    reference = run(lambda: _unknown_answers(vault, settings))
    assert (status, api_status) == (404, 404)
    assert page == reference[0] and api == reference[1]
    assert "Ce lien n'est plus valable" in page
    assert PRACTICE.name in page and PRACTICE.contact in page
    assert "portal.js" not in page


async def _unknown_answers(vault: Vault, settings: Settings) -> tuple[str, object]:
    async with serve(vault, settings) as client:
        page = await client.get("/l/BBBBBBBBBBBBBBBBBBBBBB")
        api = await client.get("/api/l/BBBBBBBBBBBBBBBBBBBBBB")
        return await page.text(), await api.json()


def test_get_and_head_of_the_page_use_no_download_and_no_code_try(
        vault: Vault, settings: Settings) -> None:
    """What link scanners and chat previewers do costs the patient nothing."""
    link = seal(vault, download_limit=1)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            for _ in range(3):
                assert (await client.get(f"/l/{link.id}")).status == 200
                head = await client.head(f"/l/{link.id}")
                assert head.status == 200 and await head.read() == b""
                assert (await client.get(f"/api/l/{link.id}")).status == 200
    run(scenario)
    info = vault.get(link.id)
    assert info is not None and info.downloads == 0 and info.failed_attempts == 0


# -- the state and the code -------------------------------------------------------------

def test_the_state_says_whether_a_code_is_needed_and_what_is_left(
        vault: Vault, settings: Settings) -> None:
    with_code = seal(vault, download_limit=3)
    without = seal(vault, code=None)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            state = await (await client.get(f"/api/l/{with_code.id}")).json()
            assert state["needs_code"] is True and state["has_code"] is True
            assert state["tries_left"] == 5 and state["download_limit"] == 3
            assert abs(state["expires"] - with_code.expires_at) < 1
            assert "documents" not in state and "received" not in state  # not before the code
            cookie = await enter_code(client, with_code)
            state = await (await client.get(f"/api/l/{with_code.id}",
                                            headers={"Cookie": cookie})).json()
            assert state["needs_code"] is False
            assert state["documents"] == [
                {"object": file_id(vault, with_code), "downloads_left": 3}]
            info = vault.get(with_code.id)
            assert info is not None and state["received"] == info.created
            state = await (await client.get(f"/api/l/{without.id}")).json()
            assert state["needs_code"] is False and state["has_code"] is False
    run(scenario)


def test_the_right_code_gives_a_short_lived_http_only_strict_cookie(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            response = await client.post(f"/api/l/{link.id}/code", json={"code": " 48-21 "})
            assert response.status == 200 and await response.json() == {"ok": True}
            header = response.headers["Set-Cookie"]
            assert header.startswith(f"pli_{link.id}=")
            assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
            assert "Max-Age=900" in header
            assert "Secure" not in header  # this portal is plain http on loopback
            assert CODE not in header
    run(scenario)


def test_the_cookie_is_secure_when_the_portal_is_served_over_https(
        vault: Vault, tmp_path: Path) -> None:
    link = seal(vault)
    settings = make_settings(tmp_path, url="https://portail.cabinet-martin.fr")

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            response = await client.post(f"/api/l/{link.id}/code", json={"code": CODE})
            assert "Secure" in response.headers["Set-Cookie"]
    run(scenario)


def test_wrong_codes_say_how_many_tries_remain_and_the_sixth_is_refused(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            for remaining in (4, 3, 2, 1, 0):
                response = await client.post(f"/api/l/{link.id}/code", json={"code": "0000"})
                answer = await response.json()
                assert response.status == 403
                assert answer["remaining"] == remaining
                assert answer["locked"] is (remaining == 0)
            for code in ("0000", CODE):  # locked: even the right code is refused now
                response = await client.post(f"/api/l/{link.id}/code", json={"code": code})
                assert response.status == 404
                assert (await response.json())["state"] == "unavailable"
            assert (await client.get(f"/l/{link.id}")).status == 404
    run(scenario)
    info = vault.get(link.id)
    assert info is not None and info.locked and info.failed_attempts == 5


def test_the_right_code_after_wrong_ones_opens_the_link(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            for _ in range(4):
                await client.post(f"/api/l/{link.id}/code", json={"code": "9999"})
            cookie = await enter_code(client, link)
            manifest = await client.get(f"/api/l/{link.id}/o/manifest",
                                        headers={"Cookie": cookie})
            assert manifest.status == 200
    run(scenario)


@pytest.mark.parametrize("how", ["form", "no code", "empty", "number", "too long", "not json"])
def test_a_code_request_that_is_not_the_pages_is_refused_without_using_a_try(
        vault: Vault, settings: Settings, how: str) -> None:
    link = seal(vault)

    async def scenario() -> int:
        async with serve(vault, settings) as client:
            url = f"/api/l/{link.id}/code"
            if how == "form":
                response = await client.post(url, data={"code": CODE})
            elif how == "not json":
                response = await client.post(url, data=b"{code",
                                             headers={"Content-Type": "application/json"})
            else:
                body = {"no code": {}, "empty": {"code": "  "}, "number": {"code": 4821},
                        "too long": {"code": "1" * 65}}[how]
                response = await client.post(url, json=body)
            return response.status
    assert run(scenario) == 400
    info = vault.get(link.id)
    assert info is not None and info.failed_attempts == 0


# -- ciphertext -------------------------------------------------------------------------

def test_objects_of_a_link_with_a_code_need_the_token_of_that_link(
        vault: Vault, settings: Settings) -> None:
    link, other = seal(vault), seal(vault)
    url = f"/api/l/{link.id}/o/manifest"

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            assert (await client.get(url)).status == 401
            assert (await client.head(url)).status == 401
            forged = f"pli_{link.id}=9999999999.AAAA"
            assert (await client.get(url, headers={"Cookie": forged})).status == 401
            other_cookie = await enter_code(client, other)
            stolen = other_cookie.replace(other.id, link.id)
            assert (await client.get(url, headers={"Cookie": stolen})).status == 401
            cookie = await enter_code(client, link)
            assert (await client.get(url, headers={"Cookie": cookie})).status == 200
    run(scenario)


def test_the_token_expires(vault: Vault, settings: Settings) -> None:
    link = seal(vault)
    now = [time.time()]

    async def scenario() -> None:
        async with serve(vault, settings, clock=lambda: now[0]) as client:
            cookie = await enter_code(client, link)
            url = f"/api/l/{link.id}/o/manifest"
            assert (await client.get(url, headers={"Cookie": cookie})).status == 200
            now[0] += 901
            assert (await client.get(url, headers={"Cookie": cookie})).status == 401
    run(scenario)


def test_a_link_without_a_code_serves_its_manifest_without_a_token(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault, code=None)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            response = await client.get(f"/api/l/{link.id}/o/manifest")
            assert response.status == 200
            assert response.headers["Accept-Ranges"] == "bytes"
            assert_security_headers(response.headers)
            served = await response.read()
            keys = derive_keys(b64url_decode(link.secret, 32), b64url_decode(link.id, 16))
            assert b"Bonjour sentinelbody" in b"".join(
                decrypt_object(keys.manifest, "manifest", served))
    run(scenario)


def test_the_manifest_never_counts_as_a_download(vault: Vault, settings: Settings) -> None:
    link = seal(vault, code=None, download_limit=1)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            for _ in range(3):
                response = await client.get(f"/api/l/{link.id}/o/manifest")
                assert response.status == 200
                await response.read()
    run(scenario)
    info = vault.get(link.id)
    assert info is not None and info.downloads == 0


@pytest.mark.parametrize("state", ["expired", "revoked"])
def test_expired_and_revoked_links_serve_nothing_even_with_a_token_or_a_grant(
        vault: Vault, settings: Settings, state: str) -> None:
    link = seal(vault)
    now = [time.time()]

    async def scenario() -> None:
        async with serve(vault, settings, clock=lambda: now[0]) as client:
            cookie = {"Cookie": await enter_code(client, link)}
            granted = await grant(client, link, file_id(vault, link), cookie["Cookie"])
            if state == "revoked":
                vault.revoke(link.id)
            else:
                now[0] += 15 * DAY
            for url in (f"/api/l/{link.id}/o/manifest",
                        f"/api/l/{link.id}/o/{file_id(vault, link)}", f"/api/l/{link.id}"):
                assert (await client.get(url, headers={**cookie, **granted})).status == 404
            response = await client.post(f"/api/l/{link.id}/code", json={"code": CODE})
            assert response.status == 404
            response = await client.post(f"/api/l/{link.id}/o/{file_id(vault, link)}/grant",
                                         json={}, headers=cookie)
            assert response.status == 404
    run(scenario)
    info = vault.get(link.id)
    assert info is not None and info.files[0].downloads == 1


# -- static files -----------------------------------------------------------------------

def test_only_the_pages_own_files_are_served_with_their_types(
        vault: Vault, settings: Settings) -> None:
    async def scenario() -> None:
        async with serve(vault, settings) as client:
            for name, kind in (("portal.js", "text/javascript"), ("vault.js", "text/javascript"),
                               ("texts.js", "text/javascript"), ("portal.css", "text/css")):
                response = await client.get(f"/static/{name}")
                assert response.status == 200, name
                assert response.headers["Content-Type"].startswith(kind)
                assert_security_headers(response.headers)
            for name in ("app.py", "..%2Fapp.py", "%2E%2E%2F__init__.py", "missing.js"):
                assert (await client.get(f"/static/{name}")).status == 404, name
    run(scenario)


def test_the_state_counts_down_the_tries_left_after_each_wrong_code(
        vault: Vault, settings: Settings) -> None:
    """What the page shows as "4 essais restants": the link's tries, from the index."""
    link = seal(vault)

    async def scenario() -> list[int]:
        left = []
        async with serve(vault, settings) as client:
            for _ in range(4):
                wrong = await client.post(f"/api/l/{link.id}/code", json={"code": "0000"})
                assert wrong.status == 403 and (await wrong.json())["error"] == "wrong_code"
                left.append((await (await client.get(f"/api/l/{link.id}")).json())["tries_left"])
        return left

    assert run(scenario) == [4, 3, 2, 1]
