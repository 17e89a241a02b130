"""The portal's answers for every state of a link and every limit, over real HTTP on
127.0.0.1. Nothing here needs a browser: the page's script is tested in test_browser."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientPayloadError

from gateway.config import Settings
from gateway.vault import Vault
from gateway.vault.format import b64url_decode, decrypt_object, derive_keys
from tests.portal.helpers import (
    CODE,
    DAY,
    PDF,
    PRACTICE,
    enter_code,
    file_id,
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
            assert "documents" not in state  # not before the code
            cookie = await enter_code(client, with_code)
            state = await (await client.get(f"/api/l/{with_code.id}",
                                            headers={"Cookie": cookie})).json()
            assert state["needs_code"] is False
            assert state["documents"] == [
                {"object": file_id(vault, with_code), "downloads_left": 3}]
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


def test_a_link_without_a_code_serves_its_objects_without_a_token(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault, code=None)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            assert (await client.get(f"/api/l/{link.id}/o/manifest")).status == 200
            response = await client.get(f"/api/l/{link.id}/o/{file_id(vault, link)}")
            assert response.status == 200
    run(scenario)


def test_the_ciphertext_is_served_as_stored_and_opens_with_the_secret(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault, code=None)
    object_id = file_id(vault, link)
    stored = (settings.vault_dir / "objects" / link.id / object_id).read_bytes()

    async def scenario() -> bytes:
        async with serve(vault, settings) as client:
            response = await client.get(f"/api/l/{link.id}/o/{object_id}")
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert response.headers["Accept-Ranges"] == "bytes"
            assert int(response.headers["Content-Length"]) == len(stored)
            assert_security_headers(response.headers)
            return await response.read()
    served = run(scenario)
    assert served == stored
    keys = derive_keys(b64url_decode(link.secret, 32), b64url_decode(link.id, 16))
    assert b"".join(decrypt_object(keys.content, object_id, served)) == PDF


def test_each_whole_file_download_counts_once_and_the_limit_holds(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault, download_limit=2)
    url = f"/api/l/{link.id}/o/{file_id(vault, link)}"

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            cookie = {"Cookie": await enter_code(client, link)}
            for downloads in (1, 2):
                response = await client.get(url, headers=cookie)
                assert response.status == 200 and len(await response.read()) > len(PDF)
                info = vault.get(link.id)
                assert info is not None and info.downloads == downloads
            assert (await client.get(url, headers=cookie)).status == 404
            assert (await client.get(f"/api/l/{link.id}/o/manifest", headers=cookie)).status == 404
            assert (await client.get(f"/l/{link.id}")).status == 404
    run(scenario)


def test_a_message_with_seven_documents_opens_whole_each_up_to_the_limit(
        vault: Vault, settings: Settings) -> None:
    """The limit is per document: 7 documents with 2 downloads each make 14 downloads."""
    files = [(f"piece-{n}.pdf", PDF[: 1000 * (n + 1)]) for n in range(7)]
    link = seal(vault, code=None, download_limit=2, files=files)
    ids = [file_id(vault, link, n) for n in range(7)]

    async def left(client: Any) -> list[int]:
        state = await (await client.get(f"/api/l/{link.id}")).json()
        assert [d["object"] for d in state["documents"]] == ids
        return [d["downloads_left"] for d in state["documents"]]

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            assert await left(client) == [2] * 7
            for round_left in (1, 0):
                for n, object_id in enumerate(ids):
                    response = await client.get(f"/api/l/{link.id}/o/{object_id}")
                    assert response.status == 200, (round_left, n)
                    assert len(await response.read()) > len(files[n][1])
                    if (round_left, n) != (0, 6):
                        assert (await client.get(f"/l/{link.id}")).status == 200
                        assert (await client.get(f"/api/l/{link.id}/o/manifest")).status == 200
                if round_left:
                    assert await left(client) == [1] * 7
            # Every document used up: the link is used up, and says so as any other.
            assert (await client.get(f"/l/{link.id}")).status == 404
            assert (await client.get(f"/api/l/{link.id}")).status == 404
    run(scenario)
    info = vault.get(link.id)
    assert info is not None and info.downloads == 14
    assert [f.downloads for f in info.files] == [2] * 7


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


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-99", 0, 100),
    ("bytes=65552-", 65552, None),
    ("bytes=-16", -16, None),
    ("bytes=0-", 0, None),  # the whole object, asked as a range: still not a download
    ("bytes=100-99999999", 100, None),
])
def test_range_requests_serve_the_slice_and_never_count(
        vault: Vault, settings: Settings, header: str, start: int, end: int | None) -> None:
    link = seal(vault, code=None, download_limit=1)
    object_id = file_id(vault, link)
    stored = (settings.vault_dir / "objects" / link.id / object_id).read_bytes()
    expected = stored[start:end]
    first = start if start >= 0 else len(stored) + start

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            for _ in range(2):
                response = await client.get(f"/api/l/{link.id}/o/{object_id}",
                                            headers={"Range": header})
                assert response.status == 206
                assert response.headers["Content-Range"] == (
                    f"bytes {first}-{first + len(expected) - 1}/{len(stored)}")
                assert await response.read() == expected
    run(scenario)
    info = vault.get(link.id)
    assert info is not None and info.downloads == 0


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=999999999-", "bytes=-0",
                                    "items=0-1", "bytes=9-1"])
def test_ranges_that_cannot_be_served_get_416_and_count_nothing(
        vault: Vault, settings: Settings, header: str) -> None:
    link = seal(vault, code=None, download_limit=1)
    object_id = file_id(vault, link)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            response = await client.get(f"/api/l/{link.id}/o/{object_id}",
                                        headers={"Range": header})
            assert response.status == 416
            assert response.headers["Content-Range"].startswith("bytes */")
    run(scenario)
    info = vault.get(link.id)
    assert info is not None and info.downloads == 0


def test_head_of_an_object_tells_its_size_and_never_counts(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault, code=None, download_limit=1)
    object_id = file_id(vault, link)
    size = (settings.vault_dir / "objects" / link.id / object_id).stat().st_size

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            for _ in range(3):
                response = await client.head(f"/api/l/{link.id}/o/{object_id}")
                assert response.status == 200
                assert int(response.headers["Content-Length"]) == size
                assert await response.read() == b""
    run(scenario)
    info = vault.get(link.id)
    assert info is not None and info.downloads == 0


def test_a_download_refused_at_the_last_moment_is_cut_short(
        vault: Vault, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two downloads racing for the last one: the loser never receives a whole object."""
    link = seal(vault, code=None)
    object_id = file_id(vault, link)
    monkeypatch.setattr(vault, "grant_download", lambda *_: None)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            response = await client.get(f"/api/l/{link.id}/o/{object_id}")
            assert response.status == 200
            with pytest.raises(ClientPayloadError):
                await response.read()
    run(scenario)


def test_an_unknown_object_or_another_links_object_is_not_served(
        vault: Vault, settings: Settings) -> None:
    link, other = seal(vault, code=None), seal(vault, code=None)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            for object_id in ("AAAAAAAAAAAAAAAAAAAAAA", file_id(vault, other), "..%2Findex",
                              "index.sqlite3"):
                response = await client.get(f"/api/l/{link.id}/o/{object_id}")
                assert response.status == 404, object_id
    run(scenario)


@pytest.mark.parametrize("state", ["expired", "revoked"])
def test_expired_and_revoked_links_serve_nothing_even_with_a_token(
        vault: Vault, settings: Settings, state: str) -> None:
    link = seal(vault)
    now = [time.time()]

    async def scenario() -> None:
        async with serve(vault, settings, clock=lambda: now[0]) as client:
            cookie = {"Cookie": await enter_code(client, link)}
            if state == "revoked":
                vault.revoke(link.id)
            else:
                now[0] += 15 * DAY
            for url in (f"/api/l/{link.id}/o/manifest",
                        f"/api/l/{link.id}/o/{file_id(vault, link)}", f"/api/l/{link.id}"):
                assert (await client.get(url, headers=cookie)).status == 404
            response = await client.post(f"/api/l/{link.id}/code", json={"code": CODE})
            assert response.status == 404
    run(scenario)


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
