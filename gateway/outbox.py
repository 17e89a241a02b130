"""The messages Pli writes itself about links after sending, queued like any other.

The notices to a sender (the message was opened, a document downloaded, the link
expired unopened) and the notice of a secure reply are built by
:mod:`gateway.transform.sender` from the link's row alone, written to the spool
(``Spool.enqueue``: on disk before anyone is told it was sent) and handed to delivery,
which relays them through the sender's own upstream account, retries them and bounces
them back to the sender like any message. The portal reaches this through the small
interface it declares (:class:`gateway.portal.notify.Notices`); the composition root
(``gateway.app``) passes it in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.logs import get_logger
from gateway.spool.store import QueuedMessage, Recipient, Spool, new_queue_id
from gateway.transform.sender import Mail, SenderMail
from gateway.types import NoticeEvent
from gateway.vault import LinkInfo, Vault

log = get_logger("pli.outbox")


class Outbox:
    def __init__(self, spool: Spool, vault: Vault, writer: SenderMail,
                 submit: Callable[[str, str], None] = lambda _id, _sender: None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.spool = spool
        self.vault = vault
        self.writer = writer
        self.submit = submit
        self.clock = clock

    # -- what the portal tells --------------------------------------------------------

    async def opened(self, info: LinkInfo) -> None:
        """The message of ``info`` was opened for the first time."""
        if _wants(info, "opened"):
            await self._event(info, "opened")

    async def downloaded(self, info: LinkInfo, document: int, count: int) -> None:
        """Document ``document`` (from 1) of ``info`` was downloaded, ``count`` times so far."""
        if _wants(info, "downloaded"):
            await self._event(info, "downloaded", document=document, count=count)

    async def reply(self, parent: LinkInfo, reply: LinkInfo, link: str) -> str:
        """Queue the notice of a secure reply; raises if it could not be queued (the
        portal then discards the reply: nobody would ever be told of it)."""
        mail = await asyncio.to_thread(self.writer.reply, parent, reply, link)
        return await self._queue(mail, link_id=reply.id, event="reply")

    # -- what the server finds ---------------------------------------------------------

    async def expired_unopened(self) -> int:
        """Tell the senders who asked about their links that expired unopened; each is
        told once (a link noted first, and un-noted if the notice could not be queued, so
        the next run tries again). How many notices were queued."""
        now = self.clock()
        queued = 0
        for info in await asyncio.to_thread(self.vault.expired_unopened, now):
            if not await asyncio.to_thread(self.vault.mark_expiry_noticed, info.id, now):
                continue  # another instance took it
            try:
                await self._event(info, "expired", at=info.expires, quiet=False)
            except Exception:
                await asyncio.to_thread(self.vault.unmark_expiry_noticed, info.id)
                raise
            queued += 1
        return queued

    # -- the spool ----------------------------------------------------------------------

    async def _event(self, info: LinkInfo, event: NoticeEvent, *, at: float | None = None,
                     document: int | None = None, count: int | None = None,
                     quiet: bool = True) -> None:
        """Notices of what a patient did must never fail the patient's request: a notice
        that cannot be queued is logged (``notice.failed``) and left."""
        try:
            mail = await asyncio.to_thread(
                self.writer.event, info, event, at=self.clock() if at is None else at,
                document=document, count=count)
            await self._queue(mail, link_id=info.id, event=event)
        except Exception as exc:
            log.error("notice.failed", link=info.id, notice=event,
                      error=getattr(exc, "strerror", None) or type(exc).__name__)
            if not quiet:
                raise

    async def _queue(self, mail: Mail, *, link_id: str, event: str) -> str:
        message = QueuedMessage(
            id=new_queue_id(), mail_from=mail.mail_from,
            recipients=[Recipient(r) for r in mail.recipients], created=self.clock(),
            size=len(mail.body), route_sender=mail.mail_from,
            smtputf8=not all(a.isascii() for a in (mail.mail_from, *mail.recipients)),
            extra={"notice": event, "link": link_id})
        await self.spool.run(self.spool.enqueue, message, mail.body)
        log.info("notice.queued", queue_id=message.id, link=link_id, notice=event,
                 recipients=list(mail.recipients))
        self.submit(message.id, message.route_sender)
        return message.id


def _wants(info: LinkInfo, event: NoticeEvent) -> bool:
    """Notices are about what the recipients of a practice's message do."""
    return info.origin == "practice" and event in info.options.notify
