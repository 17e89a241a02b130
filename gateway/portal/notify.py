"""What the portal tells the rest of Pli, through an interface the composition root fills.

The portal stands below the message path (it may not import the pipeline, the spool or
the transform): it declares here what it needs, and ``gateway.app`` passes in the
object that does it (``gateway.outbox.Outbox``), or nothing, and then no notice goes and
no reply is taken.
"""

from __future__ import annotations

from typing import Protocol

from gateway.vault import LinkInfo


class Notices(Protocol):
    async def opened(self, info: LinkInfo) -> None:
        """The link's message was read for the first time (never raises)."""

    async def downloaded(self, info: LinkInfo, document: int, count: int) -> None:
        """Document ``document`` (from 1) was downloaded, ``count`` times now (never
        raises)."""

    async def reply(self, parent: LinkInfo, reply: LinkInfo, link: str) -> str:
        """Queue the notice of ``reply`` (written on ``parent``'s page), whose ``link``
        carries its key; raises when it could not be queued. Returns its queue id."""
