"""The sender's page for one link: what became of it, revoke it, extend it.

The page's address is the one in the sender's receipt, ``/m/<link id>#<secret>``: a
secret of its own, drawn when the link was sealed, of which the index keeps only a
hash, and which is never in the recipients' notice. The page sends it back in the body
of each request (never in an address, so no proxy logs it); the same answer (404) comes
for an unknown link and for a wrong secret. Revoking asks for a confirmation on the
page and takes effect at once: the recipients' next click gets the page of a link that
no longer works. An extension never goes past what the link's rule allowed.

    GET|HEAD /m/<id>                    the page (a shell its script fills in)
    POST     /api/m/<id>                {"key"} -> the link's state
    POST     /api/m/<id>/revoke         {"key"} -> revoked
    POST     /api/m/<id>/extend         {"key", "days", "downloads"} -> the new state
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.config import Settings
from gateway.logs import get_logger
from gateway.portal.clients import ClientAddresses, CodeThrottle
from gateway.portal.pages import manage_page, negotiate
from gateway.vault import LinkInfo, Vault
from gateway.vault.format import is_link_id

log = get_logger("pli.portal")

MAX_DAYS = 365
MAX_DOWNLOADS = 1000


class ManageHandlers:
    def __init__(self, vault: Vault, settings: Settings, *, clients: ClientAddresses,
                 throttle: CodeThrottle, clock: Callable[[], float] = time.time) -> None:
        self.vault = vault
        self.settings = settings
        self.clients = clients
        self.throttle = throttle  # wrong secrets count with wrong codes, per client
        self.clock = clock

    def _client(self, request: web.Request) -> str:
        return self.clients.client(request.remote, request.headers.getall("X-Forwarded-For", []))

    async def page(self, request: web.Request) -> web.Response:
        language = negotiate(request.headers.get("Accept-Language"))
        return web.Response(text=manage_page(language, self.settings.practice),
                            content_type="text/html", charset="utf-8",
                            headers={"Content-Language": language, "Vary": "Accept-Language"})

    async def state(self, request: web.Request) -> web.Response:
        found = await self._authorised(request, "viewed")
        if isinstance(found, web.Response):
            return found
        info, _body = found
        return web.json_response(self._state(info))

    async def revoke(self, request: web.Request) -> web.Response:
        found = await self._authorised(request, "revoked")
        if isinstance(found, web.Response):
            return found
        info, _body = found
        await asyncio.to_thread(self.vault.revoke, info.id, self.clock())
        log.info("portal.manage", link=info.id, action="revoked", client=self._client(request))
        return await self._fresh(info.id)

    async def extend(self, request: web.Request) -> web.Response:
        found = await self._authorised(request, "extended")
        if isinstance(found, web.Response):
            return found
        info, body = found
        days, downloads = body.get("days", 0), body.get("downloads", 0)
        if not (_count(days, MAX_DAYS) and _count(downloads, MAX_DOWNLOADS)):
            return web.json_response({"error": "bad_request"}, status=400)
        if info.revoked is not None:
            return web.json_response({"error": "revoked", **self._state(info)}, status=409)
        extended = await asyncio.to_thread(self.vault.extend, info.id, days=days,
                                           downloads=downloads, now=self.clock(), bounded=True)
        if extended is None:
            return await self._fresh(info.id)
        log.info("portal.manage", link=info.id, action="extended", days=days,
                 downloads=downloads, client=self._client(request))
        return web.json_response(self._state(extended))

    # -- helpers ------------------------------------------------------------------------

    async def _authorised(self, request: web.Request,
                          action: str) -> tuple[LinkInfo, dict[str, Any]] | web.Response:
        """The link and the request's JSON, if the body carries the link's sender's secret;
        otherwise the answer to send (the same for an unknown link and a wrong secret)."""
        link_id = request.match_info["link_id"]
        client = self._client(request)
        wait = self.throttle.retry_after(client)
        if wait > 0:
            log.warning("portal.manage", link=_loggable(link_id), action=action,
                        outcome="throttled", client=client)
            return web.json_response({"error": "throttled", "retry_after": math.ceil(wait)},
                                     status=429, headers={"Retry-After": str(math.ceil(wait))})
        body = await _json(request)
        if body is None or not isinstance(body.get("key"), str):
            return web.json_response({"error": "bad_request"}, status=400)
        ok = is_link_id(link_id) and await asyncio.to_thread(
            self.vault.check_manage, link_id, body["key"])
        info = await asyncio.to_thread(self.vault.get, link_id) if ok else None
        if info is None:
            self.throttle.failed(client)
            log.warning("portal.manage", link=_loggable(link_id), action=action,
                        outcome="refused", client=client)
            return web.json_response({"state": "unavailable"}, status=404)
        if action == "viewed":
            log.info("portal.manage", link=link_id, action=action, client=client)
        return info, body

    async def _fresh(self, link_id: str) -> web.Response:
        info = await asyncio.to_thread(self.vault.get, link_id)
        if info is None:
            return web.json_response({"state": "unavailable"}, status=404)
        return web.json_response(self._state(info))

    def _state(self, info: LinkInfo) -> dict[str, Any]:
        """What the sender may see: addresses, times, counts. The index has nothing else."""
        return {
            "state": "ok",
            "status": info.status(self.clock()),
            "recipients": list(info.recipients),
            "created": info.created,
            "expires": info.expires,
            "max_expires": info.max_expires,
            "download_limit": info.download_limit,
            "max_download_limit": info.max_download_limit,
            "documents": [f.downloads for f in info.files],
            "opened": info.opened,
            "notify": list(info.options.notify),
            "revoked": info.revoked,
            "replies": info.replies,
        }


def _count(value: object, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most


async def _json(request: web.Request) -> dict[str, Any] | None:
    if request.content_type != "application/json":
        return None  # what the page sends; another site's plain form cannot act here
    try:
        data = json.loads(await request.read())  # the app caps bodies at a few KiB
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _loggable(link_id: str) -> str:
    return link_id if is_link_id(link_id) else "invalid"
