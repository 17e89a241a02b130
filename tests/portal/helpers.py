"""A portal over a temporary vault, driven by aiohttp's test client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import Portal, Practice, Settings, TlsFiles, Upstream
from gateway.portal import build_portal
from gateway.vault import Manifest, SealedLink, SealFile, Vault

T = TypeVar("T")

PRACTICE = Practice(name="Cabinet Martin", contact="01 23 45 67 89")
CODE = "4821"
FILE_NAME = "compte-rendu-sentinelname.pdf"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 600 + b"\n%%EOF\n"  # 153 609 bytes: 3 records
DAY = 86400.0


def make_settings(folder: Path, url: str = "http://127.0.0.1:8080") -> Settings:
    return Settings(
        hostname="pli.cabinet-martin.fr",
        data_dir=folder / "data",
        tls=TlsFiles(cert=folder / "cert.pem", key=folder / "key.pem"),
        upstream=[Upstream(host="ssl0.ovh.net")],
        practice=PRACTICE,
        portal=Portal(url=url),
    )


def seal(vault: Vault, *, code: str | None = CODE, expires_in: float = 14 * DAY,
         download_limit: int = 5, files: Sequence[tuple[str, bytes]] = ((FILE_NAME, PDF),),
         ) -> SealedLink:
    return vault.seal(
        Manifest(sender="Dr Martin <dr.martin@cabinet-martin.fr>",
                 subject="Résultats sentinelsubject", date="Mon, 02 Nov 2026 09:15:00 +0100",
                 text="Bonjour sentinelbody", html=None),
        [SealFile(name, "application/pdf", "application/pdf", data) for name, data in files],
        sender="dr.martin@cabinet-martin.fr", recipient="patient@gmail.com",
        expires_at=time.time() + expires_in, download_limit=download_limit,
        access_code=code,
    )


def file_id(vault: Vault, link: SealedLink, index: int = 0) -> str:
    info = vault.get(link.id)
    assert info is not None
    return info.objects[1 + index].id


def run(scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout)
    return asyncio.run(bounded())


@asynccontextmanager
async def serve(vault: Vault, settings: Settings,
                **options: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """Cookies are never kept: a test sends the token only when it means to."""
    app = build_portal(vault, settings, **options)
    async with TestClient(TestServer(app, host="127.0.0.1"),
                          cookie_jar=DummyCookieJar()) as client:
        yield client


async def enter_code(client: TestClient[Any, Any], link: SealedLink, code: str = CODE) -> str:
    """The right code, as the page sends it; returns the Cookie header it earned."""
    response = await client.post(f"/api/l/{link.id}/code", json={"code": code})
    assert response.status == 200, await response.text()
    morsel = response.cookies[f"pli_{link.id}"]
    return f"{morsel.key}={morsel.value}"


async def grant(client: TestClient[Any, Any], link: SealedLink, object_id: str,
                cookie: str | None = None) -> dict[str, str]:
    """One download of a document, asked for as the page does; returns the header that
    carries the grant it earned."""
    headers = {"Cookie": cookie} if cookie else {}
    response = await client.post(f"/api/l/{link.id}/o/{object_id}/grant", json={},
                                 headers=headers)
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['grant']}"}
