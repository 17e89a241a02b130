"""The download limit over real HTTP on 127.0.0.1: a document's ciphertext leaves only
under a grant, which counts one download of that document before any byte is sent; the
grant then serves it whole or by ranges, so a dropped connection resumes without
counting twice, and nobody without one (a scanner, another browser) gets a byte."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from gateway.config import Settings
from gateway.vault import SealedLink, Vault
from gateway.vault.format import b64url_decode, decrypt_object, derive_keys
from tests.portal.helpers import (
    FILE_NAME,
    PDF,
    enter_code,
    file_id,
    grant,
    run,
    seal,
    serve,
)
from tests.portal.test_handlers import assert_security_headers


def stored(settings: Settings, link: SealedLink, object_id: str) -> bytes:
    return (settings.vault_dir / "objects" / link.id / object_id).read_bytes()


def downloads(vault: Vault, link: SealedLink) -> list[int]:
    info = vault.get(link.id)
    assert info is not None
    return [f.downloads for f in info.files]


def grant_url(link: SealedLink, object_id: str) -> str:
    return f"/api/l/{link.id}/o/{object_id}/grant"


# -- nothing without a grant -------------------------------------------------------------

@pytest.mark.parametrize("how", ["bytes=0-", "bytes=0-99", "bytes=-16", "whole", "head"])
def test_without_a_grant_no_byte_of_a_document_is_served_and_nothing_counts(
        vault: Vault, settings: Settings, how: str) -> None:
    """A link with one download, read 20 times with Range: bytes=0-, served it whole 20
    times and counted nothing; now each gets 403 and not a byte of it."""
    link = seal(vault, code=None, download_limit=1)
    object_id = file_id(vault, link)
    ciphertext = stored(settings, link, object_id)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            url = f"/api/l/{link.id}/o/{object_id}"
            for _ in range(20):
                if how == "head":
                    response = await client.head(url)
                elif how == "whole":
                    response = await client.get(url)
                else:
                    response = await client.get(url, headers={"Range": how})
                body = await response.read()
                assert response.status == 403
                assert "Content-Range" not in response.headers
                assert_security_headers(response.headers)
                if how != "head":
                    assert json.loads(body) == {"error": "grant_required"}
                assert ciphertext[:16] not in body and ciphertext[-16:] not in body
            assert (await client.get(f"/l/{link.id}")).status == 200  # still the patient's
    run(scenario)
    assert downloads(vault, link) == [0]


def test_a_forged_or_misplaced_grant_serves_nothing(vault: Vault, settings: Settings) -> None:
    """A grant is for one document of one link: not another document, not another link;
    the access cookie is no grant, nor is a grant's text altered."""
    link = seal(vault, files=((FILE_NAME, PDF), ("autre.pdf", PDF[:9000])))
    other = seal(vault)
    first, second = file_id(vault, link, 0), file_id(vault, link, 1)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            cookie = await enter_code(client, link)
            granted = await grant(client, link, first, cookie)
            token = granted["Authorization"].removeprefix("Bearer ")
            other_cookie = await enter_code(client, other)
            other_grant = await grant(client, other, file_id(vault, other), other_cookie)
            attempts = [
                (second, granted),
                (file_id(vault, other), granted),
                (first, other_grant),
                (first, {"Authorization": f"Bearer {cookie.split('=', 1)[1]}"}),
                (first, {"Authorization": f"Bearer {token[:-2]}AA"}),
                (first, {"Authorization": f"Bearer 9999999999.{token.split('.')[1]}"}),
                (first, {"Authorization": f"Basic {token}"}),
                (first, {"Cookie": cookie}),
                (first, {"Cookie": f"pli_{link.id}={token}"}),
            ]
            for object_id, headers in attempts:
                response = await client.get(f"/api/l/{link.id}/o/{object_id}",
                                            headers={**headers, "Range": "bytes=0-"})
                assert response.status == 403, (object_id, headers)
                assert len(await response.read()) < 100
            response = await client.get(f"/api/l/{link.id}/o/{first}", headers=granted)
            assert response.status == 200
            assert await response.read() == stored(settings, link, first)
    run(scenario)
    assert downloads(vault, link) == [1, 0]


# -- the grant ---------------------------------------------------------------------------

def test_a_grant_counts_one_download_and_resumes_by_ranges_without_counting_again(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault, download_limit=3)
    object_id = file_id(vault, link)
    ciphertext = stored(settings, link, object_id)
    url = f"/api/l/{link.id}/o/{object_id}"

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            cookie = await enter_code(client, link)
            response = await client.post(grant_url(link, object_id), json={},
                                         headers={"Cookie": cookie})
            answer = await response.json()
            assert response.status == 200 and answer["downloads_left"] == 2
            assert abs(answer["expires"] - (time.time() + 600)) < 5
            assert_security_headers(response.headers)
            headers = {"Authorization": f"Bearer {answer['grant']}"}
            # The connection drops after 70 000 bytes; the page goes on from there.
            first = await client.get(url, headers={**headers, "Range": "bytes=0-69999"})
            assert first.status == 206
            assert first.headers["Content-Range"] == f"bytes 0-69999/{len(ciphertext)}"
            rest = await client.get(url, headers={**headers, "Range": "bytes=70000-"})
            assert rest.status == 206
            joined = await first.read() + await rest.read()
            assert joined == ciphertext
            whole = await client.get(url, headers=headers)
            assert whole.status == 200 and await whole.read() == ciphertext
            assert whole.headers["Content-Type"] == "application/octet-stream"
            head = await client.head(url, headers=headers)
            assert head.status == 200 and await head.read() == b""
            assert int(head.headers["Content-Length"]) == len(ciphertext)
            state = await (await client.get(f"/api/l/{link.id}",
                                            headers={"Cookie": cookie})).json()
            assert state["documents"] == [{"object": object_id, "downloads_left": 2}]
    run(scenario)
    assert downloads(vault, link) == [1]
    keys = derive_keys(b64url_decode(link.secret, 32), b64url_decode(link.id, 16))
    assert b"".join(decrypt_object(keys.content, object_id, ciphertext)) == PDF


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=999999999-", "bytes=-0",
                                    "items=0-1", "bytes=9-1"])
def test_ranges_that_cannot_be_served_get_416_under_a_grant(
        vault: Vault, settings: Settings, header: str) -> None:
    link = seal(vault, code=None, download_limit=2)
    object_id = file_id(vault, link)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            granted = await grant(client, link, object_id)
            response = await client.get(f"/api/l/{link.id}/o/{object_id}",
                                        headers={**granted, "Range": header})
            assert response.status == 416
            assert response.headers["Content-Range"].startswith("bytes */")
    run(scenario)
    assert downloads(vault, link) == [1]


def test_a_grant_lasts_ten_minutes(vault: Vault, settings: Settings) -> None:
    link = seal(vault, code=None)
    object_id = file_id(vault, link)
    now = [time.time()]

    async def scenario() -> None:
        async with serve(vault, settings, clock=lambda: now[0]) as client:
            granted = await grant(client, link, object_id)
            url = f"/api/l/{link.id}/o/{object_id}"
            now[0] += 599
            assert (await client.get(url, headers={**granted, "Range": "bytes=0-9"})).status == 206
            now[0] += 2
            response = await client.get(url, headers={**granted, "Range": "bytes=10-"})
            assert response.status == 403
    run(scenario)
    assert downloads(vault, link) == [1]


def test_a_download_granted_before_the_link_was_used_up_is_still_served(
        vault: Vault, settings: Settings) -> None:
    """The last download of the last document uses the link up; it still completes."""
    link = seal(vault, code=None, download_limit=1)
    object_id = file_id(vault, link)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            granted = await grant(client, link, object_id)
            assert (await client.get(f"/l/{link.id}")).status == 404  # used up now
            assert (await client.get(f"/api/l/{link.id}/o/manifest")).status == 404
            response = await client.get(f"/api/l/{link.id}/o/{object_id}", headers=granted)
            assert response.status == 200
            assert await response.read() == stored(settings, link, object_id)
            again = await client.post(grant_url(link, object_id), json={})
            assert again.status == 404 and (await again.json())["state"] == "unavailable"
    run(scenario)
    assert downloads(vault, link) == [1]


@pytest.mark.parametrize("how", ["no code", "form", "text", "manifest", "unknown object",
                                 "other link's", "unknown link", "get"])
def test_a_grant_needs_the_code_and_the_pages_request_and_a_document_of_the_link(
        vault: Vault, settings: Settings, how: str) -> None:
    link, other = seal(vault), seal(vault)
    object_id = file_id(vault, link)

    async def scenario() -> int:
        async with serve(vault, settings) as client:
            cookie = {"Cookie": await enter_code(client, link)}
            url = grant_url(link, object_id)
            if how == "no code":
                response = await client.post(url, json={})
            elif how == "form":  # what another site's form could send
                response = await client.post(url, data={"x": "1"}, headers=cookie)
            elif how == "text":
                response = await client.post(url, data=b"{}", headers={
                    **cookie, "Content-Type": "text/plain"})
            elif how == "get":
                response = await client.get(url, headers=cookie)
            else:
                target = {"manifest": "manifest", "unknown object": "AAAAAAAAAAAAAAAAAAAAAA",
                          "other link's": file_id(vault, other)}.get(how)
                link_id = "BBBBBBBBBBBBBBBBBBBBBB" if how == "unknown link" else link.id
                response = await client.post(f"/api/l/{link_id}/o/{target or object_id}/grant",
                                             json={}, headers=cookie)
            assert "grant" not in await response.text()
            return response.status

    expected = {"no code": 401, "form": 400, "text": 400, "get": 405}.get(how, 404)
    assert run(scenario) == expected
    assert downloads(vault, link) == [0] and downloads(vault, other) == [0]


def test_a_used_up_document_answers_410_and_the_others_still_download(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault, code=None, download_limit=1,
                files=((FILE_NAME, PDF), ("autre.pdf", PDF[:9000])))
    first, second = file_id(vault, link, 0), file_id(vault, link, 1)

    async def scenario() -> None:
        async with serve(vault, settings) as client:
            await grant(client, link, first)
            response = await client.post(grant_url(link, first), json={})
            assert response.status == 410
            assert await response.json() == {"error": "used_up", "downloads_left": 0}
            state = await (await client.get(f"/api/l/{link.id}")).json()
            assert state["documents"] == [{"object": first, "downloads_left": 0},
                                          {"object": second, "downloads_left": 1}]
            granted = await grant(client, link, second)
            response = await client.get(f"/api/l/{link.id}/o/{second}", headers=granted)
            assert await response.read() == stored(settings, link, second)
            assert (await client.get(f"/l/{link.id}")).status == 404  # both used up
    run(scenario)
    assert downloads(vault, link) == [1, 1]


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
                    granted = await grant(client, link, object_id)
                    response = await client.get(f"/api/l/{link.id}/o/{object_id}",
                                                headers=granted)
                    assert response.status == 200, (round_left, n)
                    assert await response.read() == stored(settings, link, object_id)
                    if (round_left, n) != (0, 6):
                        assert (await client.get(f"/l/{link.id}")).status == 200
                        assert (await client.get(f"/api/l/{link.id}/o/manifest")).status == 200
                if round_left:
                    assert await left(client) == [1] * 7
            # Every document used up: the link is used up, and says so as any other.
            assert (await client.get(f"/l/{link.id}")).status == 404
            assert (await client.get(f"/api/l/{link.id}")).status == 404
    run(scenario)
    assert downloads(vault, link) == [2] * 7


# -- racing ------------------------------------------------------------------------------

@pytest.mark.parametrize("others", [0, 1], ids=["the only document", "one of two"])
def test_of_twenty_downloads_racing_for_the_last_one_one_completes_the_rest_get_nothing(
        vault: Vault, settings: Settings, others: int) -> None:
    """Twenty browsers at once, as the page does (grant, then fetch): one receives the
    file; each of the others gets an error before any byte and nothing after it."""
    files = [(FILE_NAME, PDF)] + [("autre.pdf", PDF[:9000])] * others
    link = seal(vault, code=None, download_limit=1, files=files)
    object_id = file_id(vault, link)
    ciphertext = stored(settings, link, object_id)
    url = f"/api/l/{link.id}/o/{object_id}"

    async def download(client: Any) -> tuple[int, bytes, bytes]:
        response = await client.post(grant_url(link, object_id), json={})
        answer = await response.read()
        if response.status != 200:
            # A loser that tries anyway, as a scanner would, gets nothing either.
            tried = await client.get(url, headers={"Range": "bytes=0-"})
            return response.status, answer, await tried.read()
        token = json.loads(answer)["grant"]
        served = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        return response.status, answer, await served.read()

    async def scenario() -> list[tuple[int, bytes, bytes]]:
        async with serve(vault, settings) as client:
            return list(await asyncio.gather(*(download(client) for _ in range(20))))

    results = run(scenario)
    winners = [r for r in results if r[0] == 200]
    losers = [r for r in results if r[0] != 200]
    assert len(winners) == 1 and winners[0][2] == ciphertext
    assert len(losers) == 19
    for status, answer, tried in losers:
        # The last document of the link: the link is used up (404, like any used-up
        # link); one of two: that document is (410), the other is still there.
        assert status == (404 if others == 0 else 410), answer
        assert json.loads(answer).get("error", json.loads(answer).get("state")) in (
            "used_up", "unavailable")
        assert len(tried) < 200 and ciphertext[:64] not in tried
    assert downloads(vault, link) == [1] + [0] * others



def test_a_restart_forgets_the_grants_and_the_code_cookies(
        vault: Vault, settings: Settings) -> None:
    """The README's "A restart of Pli forgets the grants (and the code cookies)": each
    portal signs them with a key of its own, made when it starts; a download under way
    asks again, and is counted again."""
    link = seal(vault)  # with an access code
    object_id = file_id(vault, link)
    url = f"/api/l/{link.id}/o/{object_id}"

    async def before() -> tuple[str, dict[str, str]]:
        async with serve(vault, settings) as client:
            cookie = await enter_code(client, link)
            granted = await grant(client, link, object_id, cookie)
            assert (await client.get(url, headers={**granted, "Range": "bytes=0-9"})).status == 206
            return cookie, granted

    cookie, granted = run(before)

    async def after() -> list[int]:
        async with serve(vault, settings) as client:  # the portal of the next `pli run`
            return [(await client.get(url, headers={**granted, "Range": "bytes=10-"})).status,
                    (await client.get(f"/api/l/{link.id}/o/manifest",
                                      headers={"Cookie": cookie})).status]

    assert run(after) == [403, 401]
    assert downloads(vault, link) == [1]
