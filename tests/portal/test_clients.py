"""Who the portal thinks is asking, how it slows down code guessing, and what it logs."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from gateway.config import Settings
from gateway.portal import start_portal
from gateway.portal.clients import CodeThrottle
from gateway.vault import SealedLink, Vault
from tests.portal.helpers import (
    CODE,
    FILE_NAME,
    enter_code,
    file_id,
    make_settings,
    run,
    seal,
    serve,
)
from tests.support import free_port


def _wrong(client: TestClient[Any, Any], link: SealedLink, xff: str | None = None) -> Any:
    headers = {"X-Forwarded-For": xff} if xff else {}
    return client.post(f"/api/l/{link.id}/code", json={"code": "0000"}, headers=headers)


def test_wrong_codes_are_throttled_per_client_address_across_links(
        vault: Vault, settings: Settings) -> None:
    """Behind the proxy (127.0.0.1 is trusted), each patient is told apart by the address
    the proxy forwarded; one client spreading guesses over links is slowed down."""
    links = [seal(vault) for _ in range(3)]

    async def scenario() -> None:
        async with serve(vault, settings, code_throttle=CodeThrottle(limit=3)) as client:
            for link in links:
                assert (await _wrong(client, link, "203.0.113.7")).status == 403
            refused = await _wrong(client, links[0], "203.0.113.7")
            assert refused.status == 429
            assert int(refused.headers["Retry-After"]) > 0
            assert (await refused.json())["error"] == "throttled"
            right = await client.post(f"/api/l/{links[1].id}/code", json={"code": CODE},
                                      headers={"X-Forwarded-For": "203.0.113.7"})
            assert right.status == 429  # throttled means no try at all, right or wrong
            assert (await _wrong(client, links[0], "198.51.100.4")).status == 403
    run(scenario)
    info = vault.get(links[0].id)
    assert info is not None and info.failed_attempts == 2  # the throttled try never reached it


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
        vault: Vault, settings: Settings) -> None:
    """A client cannot pick a fresh address per guess by writing the header itself."""
    link = seal(vault)

    async def scenario() -> None:
        async with serve(vault, settings, trusted_proxies=[],
                         code_throttle=CodeThrottle(limit=2)) as client:
            assert (await _wrong(client, link, "192.0.2.1")).status == 403
            assert (await _wrong(client, link, "192.0.2.2")).status == 403
            assert (await _wrong(client, link, "192.0.2.3")).status == 429
    with capture_logs() as logs:
        run(scenario)
    clients = {e["client"] for e in logs if e["event"].startswith("portal.code")}
    assert clients == {"127.0.0.1"}


def test_the_proxy_chain_is_read_from_the_right(vault: Vault, settings: Settings) -> None:
    """An address the client wrote first in the header is not believed; the one the
    trusted proxy appended is."""
    link = seal(vault)

    async def scenario() -> None:
        async with serve(vault, settings, trusted_proxies=["127.0.0.1", "10.0.0.0/8"]) as c:
            await c.get(f"/l/{link.id}", headers={"X-Forwarded-For": "1.1.1.1, 203.0.113.9"})
            await c.get(f"/l/{link.id}",
                        headers={"X-Forwarded-For": "1.1.1.1, 203.0.113.10, 10.1.2.3"})
    with capture_logs() as logs:
        run(scenario)
    assert [e["client"] for e in logs if e["event"] == "portal.page"] == [
        "203.0.113.9", "203.0.113.10"]


def test_every_access_is_logged_with_link_outcome_and_client_and_nothing_secret(
        vault: Vault, settings: Settings) -> None:
    link = seal(vault, download_limit=1)
    object_id = file_id(vault, link)

    async def scenario() -> tuple[str, str]:
        async with serve(vault, settings) as client:
            headers = {"X-Forwarded-For": "203.0.113.5"}
            await client.get(f"/l/{link.id}", headers=headers)
            await client.head(f"/l/{link.id}", headers=headers)
            await client.get(f"/api/l/{link.id}", headers=headers)
            await client.post(f"/api/l/{link.id}/code", json={"code": "7777"}, headers=headers)
            cookie = await enter_code(client, link)
            headers["Cookie"] = cookie
            await (await client.get(f"/api/l/{link.id}/o/manifest", headers=headers)).read()
            response = await client.post(f"/api/l/{link.id}/o/{object_id}/grant", json={},
                                         headers=headers)
            granted = (await response.json())["grant"]
            await (await client.get(f"/api/l/{link.id}/o/{object_id}", headers={
                **headers, "Authorization": f"Bearer {granted}"})).read()
            await client.get(f"/l/{link.id}", headers=headers)
            await client.get("/l/AAAAAAAAAAAAAAAAAAAAAA", headers=headers)
            return cookie, granted

    with capture_logs() as logs:
        cookie, granted = run(scenario)
    events = [e for e in logs if e["event"].startswith("portal.")]
    names = [e["event"] for e in events]
    assert names == [
        "portal.page", "portal.page", "portal.state", "portal.code_rejected",
        "portal.code_accepted", "portal.opened", "portal.download", "portal.download",
        "portal.download", "portal.unavailable", "portal.unavailable",
    ]
    for event in events:
        assert event["link"] in (link.id, "AAAAAAAAAAAAAAAAAAAAAA")
        assert "client" in event and ("outcome" in event or "reason" in event)
    assert [e["client"] for e in events if e["event"] != "portal.code_accepted"] == (
        ["203.0.113.5"] * 10)
    downloads = [e for e in events if e["event"] == "portal.download"]
    assert [(e["object"], e["outcome"]) for e in downloads] == [
        ("manifest", "complete"), ("file", "counted"), ("file", "complete")]
    assert events[-2]["reason"] == "exhausted"
    text = json.dumps(events, default=str)
    for secret in (link.secret, CODE, "7777", FILE_NAME, "sentinel", cookie.split("=", 1)[1],
                   granted, granted.split(".")[1]):
        assert secret not in text


def test_start_portal_listens_where_the_settings_say_and_stops(
        vault: Vault, tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(tmp_path, url=f"http://127.0.0.1:{port}")
    settings = settings.model_copy(update={"portal": settings.portal.model_copy(
        update={"host": "127.0.0.1", "port": port})})
    link = seal(vault)

    async def scenario() -> None:
        import asyncio
        runner = await start_portal(settings, vault)
        try:
            def fetch() -> tuple[int, str]:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/l/{link.id}",
                                            timeout=5) as response:
                    return response.status, response.headers["Content-Security-Policy"]
            status, csp = await asyncio.to_thread(fetch)
            assert status == 200 and "frame-ancestors 'none'" in csp
        finally:
            await runner.cleanup()
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    run(scenario)
