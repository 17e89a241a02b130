"""The one place the message path is composed.

A submission goes through an ordered tuple of steps; each step reads the ``Job`` and may
change what will be queued or raise an ``SmtpReplyError`` that becomes the client's reply.
The last step writes every outgoing message to the spool; only after it returns does
the intake answer 250. Later work plugs in here (inspect → decide → transform) and
nowhere else.
"""

from __future__ import annotations

import asyncio
import email.policy
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from gateway.errors import MessageRejected, SenderNotAllowed
from gateway.logs import get_logger
from gateway.spool.store import QueuedMessage, Recipient, Spool, new_queue_id
from gateway.types import Submission

log = get_logger("pli.pipeline")


@dataclass
class Outgoing:
    """One message to relay: its envelope and its bytes (a copy per recipient group)."""

    mail_from: str
    recipients: tuple[str, ...]
    content: bytes


@dataclass
class Job:
    submission: Submission
    queue_id: str = field(default_factory=new_queue_id)
    outgoing: list[Outgoing] = field(default_factory=list)


Step = Callable[[Job], Awaitable[None]]


class Pipeline:
    def __init__(
        self,
        steps: Sequence[Step],
        spool: Spool,
        on_queued: Callable[[str], None] = lambda _id: None,
    ) -> None:
        self.steps = tuple(steps)
        self.spool = spool
        self.on_queued = on_queued

    async def process(self, submission: Submission) -> str:
        job = Job(submission)
        job.outgoing.append(
            Outgoing(submission.envelope.mail_from, submission.envelope.rcpt_tos,
                     submission.content)
        )
        for step in self.steps:
            await step(job)
        ids = await asyncio.to_thread(self._enqueue, job)
        for queue_id in ids:
            self.on_queued(queue_id)
        return job.queue_id

    def _enqueue(self, job: Job) -> list[str]:
        """Write every outgoing copy; if one fails, none stays behind."""
        env = job.submission.envelope
        written: list[str] = []
        try:
            for n, out in enumerate(job.outgoing):
                queue_id = job.queue_id if n == 0 else f"{job.queue_id}-{n}"
                message = QueuedMessage(
                    id=queue_id,
                    mail_from=out.mail_from,
                    recipients=[Recipient(r) for r in out.recipients],
                    created=time.time(),
                    size=len(out.content),
                    route_sender=env.mail_from,
                    smtputf8=env.smtputf8,
                )
                self.spool.enqueue(message, out.content)
                written.append(queue_id)
                log.info("spool.queued", queue_id=queue_id, sender=out.mail_from,
                         recipients=len(out.recipients), size=len(out.content),
                         user=job.submission.user, client=job.submission.client)
        except BaseException:
            for queue_id in written:
                self.spool.remove(queue_id)
            raise
        return written


async def check_header_from(job: Job) -> None:
    """The From: header must name only addresses the logged-in user may send as."""
    sub = job.submission
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(sub.content)
    values = headers.get_all("From") or []
    if not values:
        raise MessageRejected("The message has no From: header; check your mail client settings",
                              code=550, status="5.6.0")
    addresses = [addr for _name, addr in getaddresses([str(v) for v in values])]
    if not addresses or any(not a for a in addresses):
        raise MessageRejected("The From: header cannot be read; check your mail client settings",
                              code=550, status="5.6.0")
    for address in addresses:
        if address.lower() not in sub.allowed_senders:
            raise SenderNotAllowed(
                f"The From: header says {address}, which this account may not send as; "
                f"use {', '.join(sorted(sub.allowed_senders)) or 'an address of yours'}"
            )


DEFAULT_STEPS: tuple[Step, ...] = (check_header_from,)
