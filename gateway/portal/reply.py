"""A secure reply from a link's page: ciphertext in, a notice with a link out.

The page seals the reply in the browser under a new link (``vault.js``) and sends it in
one ``multipart/form-data`` request::

    POST /api/l/<id>/reply
      part "reply"      {"link": <new link id>, "secret": <its key>, "objects": [ids]}
      part "manifest"   the sealed manifest (the text, the documents' names)
      part <object id>  each sealed document, in the order listed

Who may: whoever may read the link (its code given), while it is usable, when its rule
allows replies; a client address and a link get a few per hour, and a link a bounded
number in its life. Where it goes is not the page's to say: along the thread, to the
link's sender when a recipient replies, to the link's recipients when the sender
answers, addresses taken from the index and nowhere else. The request's length is
checked before a byte is read, and each object while it streams (:mod:`gateway.vault
.upload`), so nothing past the bounds is kept. Once it is whole, the notice is queued
(``Notices.reply``) before the page hears it went; if it cannot be, the reply is
discarded. A reply is audited (link ids, counts, sizes), never its content or its key.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, web

from gateway.config import Settings
from gateway.logs import get_logger
from gateway.portal.notify import Notices
from gateway.throttle import RecentFailures
from gateway.vault import LinkInfo, StoreUnavailable, Vault
from gateway.vault.format import SECRET_SIZE, b64url_decode
from gateway.vault.upload import MAX_MANIFEST, ReplyLimits, ReplyUpload, UploadRefused

log = get_logger("pli.portal")

MAX_REPLIES_PER_LINK = 20
"""Replies written from one link's page in its life."""
PER_HOUR_FROM_A_CLIENT = 10
PER_HOUR_ON_A_LINK = 5
MAX_TEXT = 20_000
"""Characters of a reply's text (the page holds to it; the manifest's bound holds it)."""
MAX_DESCRIPTION = 4096
PART_OVERHEAD = 1024  # a part's boundary and headers, generously
CHUNK = 64 * 1024
WRITE_BATCH = 256 * 1024

STATUS = {"malformed": 400, "too_large": 413, "exists": 409, "unavailable": 404,
          "store_unavailable": 503}


def directions(info: LinkInfo) -> tuple[list[str], list[str]]:
    """(from, to) of a reply written on ``info``'s page: back along the thread."""
    if info.origin == "practice":
        return list(info.recipients), [info.sender]
    return [info.sender], list(info.recipients)


def reply_state(info: LinkInfo) -> dict[str, Any]:
    """What the page needs to offer a reply (only when the link allows one)."""
    sender, to = directions(info)
    return {"from": sender, "to": to, "max_files": info.options.reply_max_files,
            "max_bytes": info.options.reply_max_bytes, "max_text": MAX_TEXT}


class ReplyHandler:
    def __init__(self, vault: Vault, settings: Settings, notices: Notices | None, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.vault = vault
        self.settings = settings
        self.notices = notices
        self.clock = clock
        self.by_client = RecentFailures(3600.0, keep=PER_HOUR_FROM_A_CLIENT, clock=monotonic)
        self.by_link = RecentFailures(3600.0, keep=PER_HOUR_ON_A_LINK, clock=monotonic)

    def offered(self, info: LinkInfo) -> bool:
        return self.notices is not None and info.replies_allowed

    def wait(self, client: str, link_id: str) -> float:
        """Seconds before this client may reply on this link again; 0 when it may."""
        waits = []
        for counter, limit, key in ((self.by_client, PER_HOUR_FROM_A_CLIENT, client),
                                    (self.by_link, PER_HOUR_ON_A_LINK, link_id)):
            oldest = counter.oldest(key)
            if oldest is not None and counter.count(key) >= limit:
                waits.append(oldest + counter.window - counter.clock())
        return max([0.0, *waits])

    async def receive(self, request: web.Request, info: LinkInfo, client: str) -> web.Response:
        """The reply on ``info``'s page (usable, and the code given: the caller checked)."""
        if not self.offered(info):
            return self._refused(info.id, "not_offered", client, 403)
        wait = self.wait(client, info.id)
        if wait > 0:
            log.warning("portal.reply_refused", link=info.id, reason="throttled", client=client)
            return web.json_response({"error": "throttled", "retry_after": math.ceil(wait)},
                                     status=429, headers={"Retry-After": str(math.ceil(wait))})
        length = request.content_length
        most = (info.options.reply_max_bytes + MAX_MANIFEST + MAX_DESCRIPTION
                + (info.options.reply_max_files + 2) * (PART_OVERHEAD + 4096))
        if length is None:
            return self._refused(info.id, "no_length", client, 411)
        if length > most:  # said before a byte of it is read
            return self._refused(info.id, "too_large", client, 413)
        if request.content_type != "multipart/form-data":
            return self._refused(info.id, "malformed", client, 400)
        self.by_client.add(client)
        self.by_link.add(info.id)
        reader = await request.multipart()
        described = await _description(await reader.next())
        if described is None:
            return self._refused(info.id, "malformed", client, 400)
        reply_id, secret, objects = described
        limits = ReplyLimits(info.options.reply_max_files, info.options.reply_max_bytes)
        try:
            upload = await asyncio.to_thread(ReplyUpload, self.vault, info.id, reply_id,
                                             objects, limits)
        except UploadRefused as refused:
            return self._refused(info.id, refused.reason, client, STATUS[refused.reason])
        except StoreUnavailable as exc:  # Swift away: nothing was written
            log.error("portal.store_unavailable", link=info.id, problem=str(exc))
            return self._refused(info.id, "store_unavailable", client, 503)
        try:
            for object_id in upload.expected:
                part = await reader.next()
                if not isinstance(part, BodyPartReader) or part.name != object_id:
                    raise UploadRefused("malformed")
                await asyncio.to_thread(upload.start, object_id)
                await _stream(part, upload)
                await asyncio.to_thread(upload.end)
            if await reader.next() is not None:
                raise UploadRefused("malformed")
            reply = await asyncio.to_thread(upload.finish, self.clock(), MAX_REPLIES_PER_LINK)
        except UploadRefused as refused:
            await asyncio.to_thread(upload.abort)
            return self._refused(info.id, refused.reason, client, STATUS[refused.reason])
        except OSError as exc:
            await asyncio.to_thread(upload.abort)
            if isinstance(exc, StoreUnavailable) and exc.errno not in (errno.ENOSPC,):
                log.error("portal.store_unavailable", link=info.id, problem=str(exc))
                return self._refused(info.id, "store_unavailable", client, 503)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            return self._refused(info.id, "disk_full", client, 503)  # nothing half-kept
        except BaseException:  # the client went away mid-way, or worse: nothing is kept
            await asyncio.to_thread(upload.abort)
            raise
        link = f"{self.settings.portal.url.rstrip('/')}/l/{reply.id}#{secret}"
        try:
            assert self.notices is not None
            await self.notices.reply(info, reply, link)
        except Exception:  # noqa: BLE001 - nobody would ever be told: it is not kept
            await asyncio.to_thread(upload.abort)
            await asyncio.to_thread(self.vault.index.uncount_reply, info.id)
            return self._refused(info.id, "not_queued", client, 503)
        log.info("portal.reply", link=info.id, reply=reply.id, files=len(reply.files),
                 bytes=upload.document_bytes, size=sum(o.size for o in reply.objects),
                 client=client)
        return web.json_response({"ok": True, "to": directions(info)[1]})

    def _refused(self, link_id: str, reason: str, client: str, status: int) -> web.Response:
        log.warning("portal.reply_refused", link=link_id, reason=reason, client=client)
        return web.json_response({"error": reason}, status=status)


async def _description(part: object) -> tuple[str, str, list[str]] | None:
    """The first part: the new link's id, its key and its documents' ids, in a few bytes."""
    if not isinstance(part, BodyPartReader) or part.name != "reply":
        return None
    data = bytearray()
    while chunk := await part.read_chunk(1024):
        data += chunk
        if len(data) > MAX_DESCRIPTION:
            return None
    try:
        described = json.loads(data)
    except ValueError:
        return None
    if not isinstance(described, dict) or set(described) != {"link", "secret", "objects"}:
        return None  # nothing else may be said: not an address, not a subject
    reply_id, secret, objects = (described["link"], described["secret"],
                                 described["objects"])
    if not (isinstance(reply_id, str) and isinstance(secret, str) and isinstance(objects, list)
            and all(isinstance(o, str) for o in objects)):
        return None
    try:
        b64url_decode(secret, SECRET_SIZE)
    except ValueError:
        return None
    return reply_id, secret, objects


async def _stream(part: BodyPartReader, upload: ReplyUpload) -> None:
    pending = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        pending += chunk
        if len(pending) >= WRITE_BATCH:
            await asyncio.to_thread(upload.write, bytes(pending))
            pending.clear()
    if pending:
        await asyncio.to_thread(upload.write, bytes(pending))
