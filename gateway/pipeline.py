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
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses
from typing import TYPE_CHECKING

from gateway.errors import (InsufficientStorage, MessageRejected, PolicyBlocked, SenderNotAllowed,
                            TemporaryFailure, bilingual)
from gateway.inspect import inspect_parsed, parse
from gateway.logs import get_logger
from gateway.policy import Policy, block_reply, decide
from gateway.policy.domains import is_one_of
from gateway.spool.store import QueuedMessage, Recipient, Spool, is_disk_full, new_queue_id
from gateway.transform import Protector
from gateway.transform.extract import Extracted, extract_parsed
from gateway.transform.passcopy import pass_copy
from gateway.types import Decisions, MessageFacts, Outgoing, ProtectSettings, Submission

if TYPE_CHECKING:
    from gateway.transform.protect import Protected
    from gateway.vault import Vault

log = get_logger("pli.pipeline")


@dataclass
class Job:
    submission: Submission
    queue_id: str = field(default_factory=new_queue_id)
    outgoing: list[Outgoing] = field(default_factory=list)
    # Blocking clean-ups for what a step made durable (a sealed vault link) before the
    # message was queued: run, in reverse order, if a later step or the spool fails.
    undo: list[Callable[[], object]] = field(default_factory=list)


Step = Callable[[Job], Awaitable[None]]


class Pipeline:
    def __init__(
        self,
        steps: Sequence[Step],
        spool: Spool,
        on_queued: Callable[[str, str], None] = lambda _id, _sender: None,
    ) -> None:
        self.steps = tuple(steps)
        self.spool = spool
        self.on_queued = on_queued

    async def process(self, submission: Submission) -> str:
        try:
            return await self._process(submission)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # Whatever was half-written has been undone; the client keeps the message.
            log.error("pipeline.disk_full", error=exc.strerror or "no space left",
                      user=submission.user, client=submission.client)
            raise InsufficientStorage() from None

    async def _process(self, submission: Submission) -> str:
        job = Job(submission)
        job.outgoing.append(
            Outgoing(submission.envelope.mail_from, submission.envelope.rcpt_tos,
                     submission.content)
        )
        try:
            for step in self.steps:
                await step(job)
        except BaseException:
            await asyncio.to_thread(_run_undo, job)
            raise
        loop = asyncio.get_running_loop()
        writing = loop.run_in_executor(None, self._enqueue, job)
        try:
            ids = await asyncio.shield(writing)
        except asyncio.CancelledError:
            # The session went away (client gone, server stopping) while the spool was
            # being written. The thread goes on: once it is done, what it queued is
            # delivered, and only if it failed are the sealed links discarded. Undoing
            # now could leave a queued notice pointing at a discarded link.
            writing.add_done_callback(lambda done: self._after_cancel(done, job))
            raise
        except BaseException:
            await asyncio.to_thread(_run_undo, job)
            raise
        for queue_id in ids:
            self.on_queued(queue_id, submission.envelope.mail_from)
        return job.queue_id

    def _after_cancel(self, writing: asyncio.Future[list[str]], job: Job) -> None:
        if writing.cancelled() or writing.exception() is not None:
            asyncio.get_running_loop().run_in_executor(None, _run_undo, job)
            return
        for queue_id in writing.result():
            self.on_queued(queue_id, job.submission.envelope.mail_from)

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


def _run_undo(job: Job) -> None:
    for undo in reversed(job.undo):
        try:
            undo()
        except Exception as exc:
            log.error("pipeline.undo_failed", queue_id=job.queue_id, error=type(exc).__name__)


async def check_header_from(job: Job) -> None:
    """The From: header must name only addresses the logged-in user may send as."""
    sub = job.submission
    # Headers may be raw UTF-8 (SMTPUTF8): decode them as such, not as ASCII.
    head = sub.content.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    headers = HeaderParser(policy=email.policy.compat32).parsestr(head + "\r\n\r\n")
    values = headers.get_all("From") or []
    if not values:
        raise MessageRejected(bilingual(
            "Le message n'a pas d'en-tête From: ; vérifiez les réglages de votre messagerie",
            "The message has no From: header; check your mail client settings"))
    addresses = [addr for _name, addr in getaddresses([str(v) for v in values])]
    if not addresses or any(not a for a in addresses):
        raise MessageRejected(bilingual(
            "L'en-tête From: est illisible ; vérifiez les réglages de votre messagerie",
            "The From: header cannot be read; check your mail client settings"))
    for address in addresses:
        if not is_one_of(address, sub.allowed_senders):
            allowed = ", ".join(sorted(sub.allowed_senders))
            raise SenderNotAllowed(bilingual(
                f"L'en-tête From: indique {address}, que ce compte ne peut pas utiliser ; "
                f"utilisez {allowed or 'une de vos adresses'}",
                f"The From: header says {address}, which this account may not send as; "
                f"use {allowed or 'an address of yours'}"))


class ApplyPolicy:
    """Inspect the message, let the policy decide per recipient, and act on it: refuse it
    (block), keep one unchanged copy for the recipients it passes, and hand each protected
    group to the transform, which seals the original in the vault and writes the notice.

    ``current`` returns the policy in force, so a reload (SIGHUP) takes effect for the
    next message without touching sessions under way."""

    def __init__(self, current: Callable[[], Policy], protector: Protector | None,
                 hostname: str | None = None) -> None:
        self.current = current
        self.protector = protector
        self.hostname = hostname  # for a Date: or Message-ID: a passed message lacks

    async def __call__(self, job: Job) -> None:
        sub = job.submission
        env = sub.envelope
        parsed, facts = await asyncio.to_thread(_parse_and_inspect, sub.content)
        policy = self.current()  # one policy for the whole message, even across a reload
        decisions = decide(policy, env, facts)
        reply = block_reply(decisions, utf8=env.smtputf8)
        if reply:
            _log_decisions(job, facts, decisions, {})
            raise PolicyBlocked.from_reply(reply)
        outgoing: list[Outgoing] = []
        passed = tuple(r for g in decisions.groups if g.decision.action == "pass"
                       for r in g.recipients)
        if passed:
            outgoing.append(Outgoing(env.mail_from, passed,
                                     pass_copy(sub.content, policy.tag_names, self.hostname)))
        links: dict[int, str] = {}
        parts: Extracted | None = None
        for n, group in enumerate(decisions.groups):
            if group.decision.action != "protect":
                continue
            # A protect without settings still protects: skipping it would queue nothing.
            how = group.decision.protect or ProtectSettings()
            if self.protector is None:
                raise TemporaryFailure(bilingual(
                    "La protection n'est pas disponible sur ce serveur : message non envoyé",
                    "Protection is not available on this server, so this message was not "
                    "sent"), code=451, status="4.7.0")
            if parts is None:  # taken apart once, whatever the number of groups
                parts = await asyncio.to_thread(extract_parsed, parsed, sub.content)
            vault = self.protector.vault
            sealing = asyncio.ensure_future(asyncio.to_thread(
                self.protector.protect, sub.content, env.mail_from, group.recipients, how,
                original=parsed, parts=parts, tag_names=policy.tag_names))
            try:
                protected = await asyncio.shield(sealing)
            except asyncio.CancelledError:
                # The session went away while the thread seals: the link it makes will
                # never be sent, so it is discarded once sealed, not left until expiry.
                sealing.add_done_callback(functools.partial(_discard_sealed, vault))
                raise
            job.undo.append(functools.partial(vault.discard, protected.link_id))
            links[n] = protected.link_id
            outgoing.extend(protected.outgoing)
        job.outgoing = outgoing
        _log_decisions(job, facts, decisions, links)


def _discard_sealed(vault: Vault, sealing: asyncio.Future[Protected]) -> None:
    if not sealing.cancelled() and sealing.exception() is None:
        link_id = sealing.result().link_id
        try:
            asyncio.get_running_loop().run_in_executor(None, vault.discard, link_id)
        except RuntimeError:  # the server is stopping: the unsent link expires on its own
            log.warning("pipeline.undo_failed", error="stopping")


def _parse_and_inspect(content: bytes) -> tuple[Message | None, MessageFacts]:
    parsed = parse(content)
    return parsed, inspect_parsed(parsed, len(content))


def _log_decisions(job: Job, facts: MessageFacts, decisions: Decisions,
                   links: dict[int, str]) -> None:
    """One event per recipient group: rule, action, counts, true types, sizes, link id.

    Subjects, texts and file names are in ``facts`` too; they are deliberately not read."""
    for n, group in enumerate(decisions.groups):
        log.info(
            "policy.decided",
            queue_id=job.queue_id,
            sender=job.submission.envelope.mail_from,
            recipients=list(group.recipients),
            rule=group.decision.rule,
            action=group.decision.action,
            attachments=len(facts.attachments),
            types=sorted({a.true_type for a in facts.attachments}),
            sizes=[a.size for a in facts.attachments],
            size=facts.size,
            link=links.get(n),
        )


def default_steps(current_policy: Callable[[], Policy], protector: Protector | None,
                  hostname: str | None = None) -> tuple[Step, ...]:
    return (check_header_from, ApplyPolicy(current_policy, protector, hostname))
