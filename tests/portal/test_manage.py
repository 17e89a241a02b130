"""The sender's page for a link, over HTTP: its secret alone opens it, revoking takes
effect at the recipients' next request, and an extension stays within the link's rule."""

from __future__ import annotations

import json
import time
from typing import Any

from structlog.testing import capture_logs

from gateway.config import Settings
from gateway.vault import LinkOptions, Manifest, SealedLink, SealFile, Vault
from tests.portal.helpers import DAY, FILE_NAME, PDF, run, serve

KEY_FIELDS = {"state", "status", "recipients", "created", "expires", "max_expires",
              "download_limit", "max_download_limit", "documents", "opened", "notify",
              "revoked", "replies"}


def seal(vault: Vault, *, expires_in: float = 14 * DAY) -> SealedLink:
    now = time.time()
    return vault.seal(
        Manifest(sender="Dr Martin <dr.martin@cabinet-martin.fr>", subject="sentinelsubject",
                 date="", text="sentinelbody"),
        [SealFile(FILE_NAME, "application/pdf", "application/pdf", PDF)],
        sender="dr.martin@cabinet-martin.fr", recipient="patient@gmail.com",
        expires_at=now + expires_in, download_limit=5, access_code=None,
        options=LinkOptions(notify=("opened",), max_expires=now + 30 * DAY,
                            max_download_limit=10), manage=True)


async def post(client: Any, path: str, body: object) -> tuple[int, dict[str, Any]]:
    response = await client.post(path, json=body)
    return response.status, await response.json()


def test_the_page_is_the_same_shell_for_any_link(vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> list[tuple[int, str]]:
        async with serve(vault, settings) as client:
            pages = []
            for link_id in (link.id, "AAAAAAAAAAAAAAAAAAAAAA"):
                response = await client.get(f"/m/{link_id}")
                pages.append((response.status, await response.text()))
            return pages

    (status, page), (other_status, other) = run(scenario)
    assert status == other_status == 200 and page == other
    assert '<script type="module" src="/static/manage.js">' in page
    assert "Révoquer le lien" in page and "sentinel" not in page


def test_the_senders_secret_alone_shows_the_links_state(vault: Vault,
                                                        settings: Settings) -> None:
    link = seal(vault)
    assert link.manage_secret is not None

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        async with serve(vault, settings) as client:
            return [await post(client, f"/api/m/{link.id}", {"key": key})
                    for key in (link.manage_secret, link.secret, "A" * 43)] + [
                await post(client, "/api/m/AAAAAAAAAAAAAAAAAAAAAA", {"key": link.manage_secret})]

    with capture_logs() as logs:
        (ok, state), *refused = run(scenario)
    assert ok == 200 and set(state) == KEY_FIELDS
    assert state["status"] == "ok" and state["recipients"] == ["patient@gmail.com"]
    assert state["documents"] == [0] and state["notify"] == ["opened"]
    assert state["opened"] is None and state["revoked"] is None
    assert "sentinel" not in json.dumps(state) and FILE_NAME not in json.dumps(state)
    assert refused == [(404, {"state": "unavailable"})] * 3  # the patient's key opens nothing
    logged = json.dumps(logs, default=str)
    assert link.manage_secret not in logged and link.secret not in logged
    assert [e.get("outcome") for e in logs if e["event"] == "portal.manage"] == [
        None, "refused", "refused", "refused"]


def test_revoking_kills_the_recipients_link_at_their_next_request(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> tuple[int, int, int, dict[str, Any], int, int]:
        async with serve(vault, settings) as client:
            before = (await client.get(f"/l/{link.id}")).status
            status, state = await post(client, f"/api/m/{link.id}/revoke",
                                       {"key": link.manage_secret})
            page = await client.get(f"/l/{link.id}")
            manifest = await client.get(f"/api/l/{link.id}/o/manifest")
            again, _ = await post(client, f"/api/m/{link.id}/extend",
                                  {"key": link.manage_secret, "days": 1})
            shown, _ = await post(client, f"/api/m/{link.id}", {"key": link.manage_secret})
            return before, status, page.status, state, manifest.status, again * 1000 + shown

    before, status, page, state, manifest, codes = run(scenario)
    assert (before, status, page, manifest) == (200, 200, 404, 404)
    assert state["status"] == "revoked" and state["revoked"] is not None
    assert codes == 409 * 1000 + 200  # a revoked link stays revoked; its page still shows it


def test_an_extension_stays_within_what_the_rule_allowed(vault: Vault,
                                                         settings: Settings) -> None:
    link = seal(vault)
    info = vault.get(link.id)
    assert info is not None

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        async with serve(vault, settings) as client:
            path, key = f"/api/m/{link.id}/extend", link.manage_secret
            return [await post(client, path, {"key": key, "days": 7, "downloads": 2}),
                    await post(client, path, {"key": key, "days": 365, "downloads": 1000}),
                    await post(client, path, {"key": key, "days": -1}),
                    await post(client, path, {"key": key, "days": True}),
                    await post(client, path, {"key": key, "downloads": 1001})]

    (ok, first), (capped_status, capped), *bad = run(scenario)
    assert ok == capped_status == 200
    assert abs(first["expires"] - (info.expires + 7 * DAY)) < 1
    assert first["download_limit"] == 7
    assert abs(capped["expires"] - info.max_expires) < 1 and capped["download_limit"] == 10
    assert [status for status, _ in bad] == [400, 400, 400]
    assert vault.status(link.id) == "ok"


def test_requests_that_are_not_the_pages_are_refused(vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> list[int]:
        async with serve(vault, settings) as client:
            form = await client.post(f"/api/m/{link.id}/revoke",
                                     data={"key": link.manage_secret})
            no_key = await client.post(f"/api/m/{link.id}/revoke", json={})
            listed = await client.post(f"/api/m/{link.id}/revoke", json=[link.manage_secret])
            return [form.status, no_key.status, listed.status]

    assert run(scenario) == [400, 400, 400]
    assert vault.status(link.id) == "ok"


def test_wrong_secrets_from_one_client_are_throttled(vault: Vault, settings: Settings) -> None:
    link = seal(vault)

    async def scenario() -> list[int]:
        async with serve(vault, settings) as client:
            statuses = [(await post(client, f"/api/m/{link.id}", {"key": "A" * 43}))[0]
                        for _ in range(11)]
            statuses.append((await post(client, f"/api/m/{link.id}",
                                        {"key": link.manage_secret}))[0])
            return statuses

    assert run(scenario) == [404] * 10 + [429, 429]
