"""The portal's requests: the link page, its JSON API, and the ciphertext.

What each request may use up:
- GET or HEAD of the page, GET of the state: nothing. Link scanners and chat previewers
  fetch links before the patient does; they must not cost a download or a code try.
- POST of a code: one try of the link (the vault counts them, 5 by default, then locks)
  and, when wrong, one strike against the client address (:class:`CodeThrottle`).
- POST of a grant for a document: one download of that document (each may be downloaded
  ``download_limit`` times), counted in one transaction before any byte of it is sent,
  so of downloads racing for the last one, one wins and the others get an error and
  nothing else. The answer is a grant (:mod:`gateway.portal.tokens`).
- GET or HEAD of a document's ciphertext: nothing, and only under a grant for that
  document; whole or by ranges, so a dropped connection resumes without counting
  twice. Without a grant, not one byte of it (403), ranges included.
- GET or HEAD of the manifest (the message and the list of documents): nothing; it is
  not a document, and is served while any document can still be downloaded. The first
  GET of it marks the message opened.

The link's sender is told, when the link asks for it (through :class:`Notices`), of the
message's first opening and of each download counted; a notice that cannot be queued
never fails the patient's request.

Unknown, expired, revoked, exhausted (every document used up) and locked links all get
the same answer, page or JSON, with the same status (404), so ids cannot be probed for
their state. Every request is logged (link id, outcome, client address); never a code,
a grant, a secret or a file name.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator

from aiohttp import web

from gateway.config import Settings
from gateway.logs import get_logger
from gateway.portal.clients import ClientAddresses, CodeThrottle
from gateway.portal.notify import Notices
from gateway.portal.pages import Language, link_page, negotiate, practice_sentence, unavailable_page
from gateway.portal.ranges import RangeNotSatisfiable, parse_range
from gateway.portal.reply import ReplyHandler, reply_state
from gateway.portal.tokens import AccessTokens
from gateway.vault import (
    CiphertextReader,
    LinkInfo,
    LinkUnavailable,
    StoreUnavailable,
    UnknownLink,
    Vault,
)
from gateway.vault.format import MANIFEST_OBJECT_ID, is_link_id, is_object_id

log = get_logger("pli.portal")

MAX_CODE_LENGTH = 64


class Handlers:
    def __init__(
        self,
        vault: Vault,
        settings: Settings,
        *,
        clients: ClientAddresses,
        throttle: CodeThrottle,
        tokens: AccessTokens,
        clock: Callable[[], float] = time.time,
        notices: Notices | None = None,
    ) -> None:
        self.vault = vault
        self.settings = settings
        self.clients = clients
        self.throttle = throttle
        self.tokens = tokens
        self.clock = clock
        self.notices = notices
        self.replies = ReplyHandler(vault, settings, notices, clock=clock)
        self.secure_cookie = settings.portal.url.startswith("https://")

    # -- helpers ----------------------------------------------------------------------

    def client(self, request: web.Request) -> str:
        return self.clients.client(request.remote, request.headers.getall("X-Forwarded-For", []))

    async def link(self, link_id: str) -> tuple[LinkInfo | None, str]:
        """The link's row and its status ("unknown" for text that cannot be a link id)."""
        if not is_link_id(link_id):
            return None, "unknown"
        try:
            info = await asyncio.to_thread(self.vault.get, link_id)
        except StoreUnavailable as exc:  # the shared index away: the link is fine, later
            log.error("portal.store_unavailable", link=link_id, at="index", problem=str(exc))
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "30"}) from None
        return info, "unknown" if info is None else info.status(self.clock())

    def has_access(self, request: web.Request, info: LinkInfo) -> bool:
        if not info.has_code:
            return True
        return self.tokens.valid(info.id, request.cookies.get(self.tokens.cookie_name(info.id)))

    def unavailable_json(self, request: web.Request) -> web.Response:
        language = negotiate(request.headers.get("Accept-Language"))
        return web.json_response(
            {"state": "unavailable",
             "contact": practice_sentence(self.settings.practice, language, "contact")},
            status=404,
        )

    # -- the page ---------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        """GET and HEAD /l/<id>: the page, or the page saying the link no longer works."""
        link_id = request.match_info["link_id"]
        client = self.client(request)
        language = negotiate(request.headers.get("Accept-Language"))
        _, status = await self.link(link_id)
        practice = self.settings.practice
        if status != "ok":
            log.info("portal.unavailable", link=_loggable(link_id), reason=status, at="page",
                     method=request.method, client=client)
            return _html(unavailable_page(language, practice), 404, language)
        log.info("portal.page", link=link_id, outcome="ok", method=request.method,
                 client=client)
        return _html(link_page(language, practice), 200, language)

    # -- the API ----------------------------------------------------------------------

    async def state(self, request: web.Request) -> web.Response:
        """GET /api/l/<id>: what the page needs to know before it asks for anything."""
        link_id = request.match_info["link_id"]
        client = self.client(request)
        info, status = await self.link(link_id)
        if info is None or status != "ok":
            log.info("portal.unavailable", link=_loggable(link_id), reason=status, at="state",
                     client=client)
            return self.unavailable_json(request)
        access = self.has_access(request, info)
        log.info("portal.state", link=link_id, outcome="ok", access=access, client=client)
        state: dict[str, object] = {
            "state": "ok",
            "has_code": info.has_code,
            "needs_code": not access,
            "tries_left": max(0, self.vault.index.max_code_attempts - info.failed_attempts),
            "expires": info.expires,
            "download_limit": info.download_limit,
        }
        if access:  # what is left of each document, for whoever may download them
            state["documents"] = [{"object": f.id, "downloads_left": info.downloads_left(f)}
                                  for f in info.files]
            # When Pli took the message: the page's date when the original had none.
            state["received"] = info.created
            state["origin"] = info.origin  # "patient": a reply, read by its sender
            if self.replies.offered(info):
                state["reply"] = reply_state(info)
        return web.json_response(state)

    async def code(self, request: web.Request) -> web.Response:
        """POST /api/l/<id>/code with {"code": "..."}: the token cookie, or tries left."""
        link_id = request.match_info["link_id"]
        client = self.client(request)
        wait = self.throttle.retry_after(client)
        if wait > 0:
            log.warning("portal.code_throttled", link=_loggable(link_id), outcome="throttled",
                        client=client, retry_after=math.ceil(wait))
            return web.json_response({"ok": False, "error": "throttled",
                                      "retry_after": math.ceil(wait)},
                                     status=429, headers={"Retry-After": str(math.ceil(wait))})
        code = await _code_from(request)
        if code is None:
            log.info("portal.bad_request", link=_loggable(link_id), outcome="malformed_code",
                     client=client)
            return web.json_response({"ok": False, "error": "bad_request"}, status=400)
        info, status = await self.link(link_id)
        if info is None or status != "ok":
            log.info("portal.unavailable", link=_loggable(link_id), reason=status, at="code",
                     client=client)
            return self.unavailable_json(request)
        try:
            check = await asyncio.to_thread(self.vault.check_code, link_id, code)
        except UnknownLink:
            log.info("portal.unavailable", link=link_id, reason="unknown", at="code",
                     client=client)
            return self.unavailable_json(request)
        if not check.ok:
            self.throttle.failed(client)
            log.warning("portal.code_rejected", link=link_id, outcome="wrong",
                        remaining=check.remaining, locked=check.locked, client=client)
            return web.json_response(
                {"ok": False, "error": "wrong_code", "remaining": check.remaining,
                 "locked": check.locked},
                status=403,
            )
        log.info("portal.code_accepted", link=link_id, outcome="ok", client=client)
        response = web.json_response({"ok": True})
        response.set_cookie(
            self.tokens.cookie_name(link_id), self.tokens.issue(link_id),
            max_age=int(self.tokens.lifetime), path="/", secure=self.secure_cookie,
            httponly=True, samesite="Strict",
        )
        return response

    async def reply(self, request: web.Request) -> web.Response:
        """POST /api/l/<id>/reply: a secure reply, sealed in the browser (see reply.py)."""
        link_id = request.match_info["link_id"]
        client = self.client(request)
        info, status = await self.link(link_id)
        if info is None or status != "ok":
            log.info("portal.reply_refused", link=_loggable(link_id), reason=status,
                     client=client)
            return self.unavailable_json(request)
        if not self.has_access(request, info):
            log.warning("portal.reply_refused", link=link_id, reason="code_required",
                        client=client)
            return web.json_response({"error": "code_required"}, status=401)
        return await self.replies.receive(request, info, client)

    async def grant(self, request: web.Request) -> web.Response:
        """POST /api/l/<id>/o/<object id>/grant: count one download of a document now,
        and answer the grant under which its ciphertext is then served; 410 when the
        document has no download left (the link still works for the others)."""
        link_id = request.match_info["link_id"]
        object_id = request.match_info["object_id"]
        client = self.client(request)
        info, status = await self.link(link_id)
        if info is None or status != "ok" or object_id not in {f.id for f in info.files}:
            log.info("portal.unavailable", link=_loggable(link_id), reason=status, at="grant",
                     client=client)
            return self.unavailable_json(request)
        if not self.has_access(request, info):
            log.warning("portal.download", link=link_id, object="file",
                        outcome="code_required", method="POST", client=client)
            return web.json_response({"error": "code_required"}, status=401)
        if request.content_type != "application/json":
            # What the page sends; another site's plain form cannot use a download up.
            log.info("portal.bad_request", link=link_id, outcome="malformed_grant",
                     client=client)
            return web.json_response({"error": "bad_request"}, status=400)
        left = await asyncio.to_thread(self.vault.grant_download, link_id, object_id,
                                       self.clock())
        if left is None:
            _, status = await self.link(link_id)
            log.warning("portal.download", link=link_id, object="file",
                        outcome="limit_reached", method="POST", client=client)
            if status != "ok":  # that was the last download of the last document
                return self.unavailable_json(request)
            return web.json_response({"error": "used_up", "downloads_left": 0}, status=410)
        token, expires = self.tokens.issue_grant(link_id, object_id)
        log.info("portal.download", link=link_id, object="file", outcome="counted",
                 method="POST", client=client)
        if self.notices is not None:
            document = [f.id for f in info.files].index(object_id) + 1
            await self.notices.downloaded(info, document, max(0, info.download_limit - left))
        return web.json_response({"grant": token, "expires": expires, "downloads_left": left})

    async def object(self, request: web.Request) -> web.StreamResponse:
        """GET and HEAD /api/l/<id>/o/<object id>: ciphertext as stored, with ranges; a
        document only under its grant, the manifest with the link's access."""
        link_id = request.match_info["link_id"]
        object_id = request.match_info["object_id"]
        client = self.client(request)
        kind = "manifest" if object_id == MANIFEST_OBJECT_ID else "file"
        info, status = await self.link(link_id)
        if info is None or not (kind == "manifest" or is_object_id(object_id)):
            log.info("portal.unavailable", link=_loggable(link_id), reason=status, at=kind,
                     method=request.method, client=client)
            return self.unavailable_json(request)
        granted = kind == "file" and self.tokens.valid_grant(
            link_id, object_id, _bearer(request))
        # A download granted before the link was used up is still served; nothing else.
        if status != "ok" and not (granted and status == "exhausted"):
            log.info("portal.unavailable", link=link_id, reason=status, at=kind,
                     method=request.method, client=client)
            return self.unavailable_json(request)
        if kind == "manifest" and not self.has_access(request, info):
            log.warning("portal.download", link=link_id, object=kind, outcome="code_required",
                        method=request.method, client=client)
            return web.json_response({"error": "code_required"}, status=401)
        if kind == "file" and not granted:
            log.warning("portal.download", link=link_id, object=kind, outcome="grant_required",
                        method=request.method, client=client)
            return web.json_response({"error": "grant_required"}, status=403)
        try:
            reader = await asyncio.to_thread(self.vault.open_object, link_id, object_id,
                                             self.clock(), granted=granted)
        except (LinkUnavailable, FileNotFoundError) as exc:
            reason = exc.status if isinstance(exc, LinkUnavailable) else "missing"
            log.info("portal.unavailable", link=link_id, reason=reason, at=kind,
                     method=request.method, client=client)
            return self.unavailable_json(request)
        except StoreUnavailable as exc:  # Swift away: the link is fine, come back later
            log.error("portal.store_unavailable", link=link_id, at=kind, problem=str(exc),
                      client=client)
            return web.json_response({"error": "store_unavailable"}, status=503,
                                     headers={"Retry-After": "30"})
        if kind == "manifest" and request.method == "GET":
            await self._opened(link_id, client)
        try:
            return await self._serve(request, reader, link_id, kind, client)
        finally:
            reader.close()

    async def _opened(self, link_id: str, client: str) -> None:
        """The first time the message is read: noted, audited, and the sender told."""
        if not await asyncio.to_thread(self.vault.mark_opened, link_id, self.clock()):
            return
        log.info("portal.opened", link=link_id, outcome="first", client=client)
        info = await asyncio.to_thread(self.vault.get, link_id)
        if info is not None and self.notices is not None:
            await self.notices.opened(info)

    async def _serve(self, request: web.Request, reader: CiphertextReader, link_id: str,
                     kind: str, client: str) -> web.StreamResponse:
        size = reader.size
        try:
            wanted = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            log.info("portal.download", link=link_id, object=kind, outcome="bad_range",
                     method=request.method, client=client)
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        start, end = (0, size) if wanted is None else (wanted.start, wanted.end)
        response = web.StreamResponse(status=200 if wanted is None else 206)
        response.content_type = "application/octet-stream"
        response.content_length = end - start
        response.headers["Accept-Ranges"] = "bytes"
        if wanted is not None:
            response.headers["Content-Range"] = wanted.content_range(size)
        if request.method == "HEAD":
            await response.prepare(request)
            await response.write_eof()
            log.info("portal.download", link=link_id, object=kind, outcome="head",
                     method="HEAD", client=client)
            return response
        chunks: Iterator[bytes] = reader.iter_range(start, end)
        await response.prepare(request)
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionError, OSError) as exc:
            log.info("portal.download", link=link_id, object=kind, outcome="interrupted",
                     error=type(exc).__name__, client=client)
            _abort(request)
            return response
        log.info("portal.download", link=link_id, object=kind,
                 outcome="partial" if wanted is not None else "complete",
                 bytes=end - start, client=client)
        return response


async def _code_from(request: web.Request) -> str | None:
    """The code from a small JSON body; None when the request is not what the page sends
    (also keeps other sites' plain form posts out: they cannot send JSON)."""
    if request.content_type != "application/json":
        return None
    try:
        data = json.loads(await request.read())  # the app caps bodies at a few KiB
    except ValueError:
        return None
    code = data.get("code") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE_LENGTH:
        return None
    return code


def _bearer(request: web.Request) -> str | None:
    """The grant the page sends as ``Authorization: Bearer <grant>`` (RFC 6750)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _abort(request: web.Request) -> None:
    """Close the connection under a response whose length was announced, so the browser
    sees an incomplete object rather than a complete one."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _html(body: str, status: int, language: Language) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers={"Content-Language": language, "Vary": "Accept-Language"})


def _loggable(link_id: str) -> str:
    """Link ids go into the log; whatever else was in the address does not."""
    return link_id if is_link_id(link_id) else "invalid"
