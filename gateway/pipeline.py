"""The one place the message path is composed.

A submission becomes a :class:`Job` that carries the message model (opened once on the
file the intake wrote), the facts, the decisions and the outgoing copies; an ordered
tuple of steps reads and fills it::

    check_sender → inspect → check_header → decide → block → pass → protect → log → queue

Each step may raise an ``SmtpReplyError`` that becomes the client's reply. The last one
writes every copy to the spool; only after it returns does the intake answer 250. If
anything fails, what a step made durable (a sealed vault link) is undone, and nothing
is left in the spool. Later work plugs in here and nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from gateway.errors import (
    InsufficientStorage,
    MessageRejected,
    PolicyBlocked,
    SenderNotAllowed,
    TemporaryFailure,
    bilingual,
)
from gateway.inspect import Inspection, inspect
from gateway.logs import get_logger
from gateway.message.address import parse_addresses
from gateway.message.model import Message
from gateway.policy import Policy, block_reply, decide
from gateway.policy.domains import is_one_of
from gateway.spool.store import QueuedMessage, Recipient, Spool, is_disk_full, new_queue_id
from gateway.transform import Protector
from gateway.transform.extract import Extracted, extract
from gateway.transform.passcopy import pass_copy
from gateway.types import ByteRange, Decisions, MessageFacts, Outgoing, ProtectSettings, Submission
from gateway.vault.objects import StoreUnavailable

if TYPE_CHECKING:
    from gateway.transform.protect import Protected
    from gateway.vault import Vault

log = get_logger("pli.pipeline")

T = TypeVar("T")

INLINE = 256 * 1024
"""Work on a message up to this size is done on the event loop (a thread costs more
than reading a few kilobytes); on a larger one, in a worker thread."""


@dataclass
class Job:
    submission: Submission
    message: Message
    queue_id: str
    inspection: Inspection | None = None
    policy: Policy | None = None
    decisions: Decisions | None = None
    parts: Extracted | None = None  # the message taken apart, once for all protected groups
    links: dict[int, str] = field(default_factory=dict)  # group index → vault link id
    outgoing: list[Outgoing] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    # Blocking clean-ups for what a step made durable (a sealed vault link) before the
    # message was queued: run, in reverse order, if a later step or the spool fails.
    undo: list[Callable[[], object]] = field(default_factory=list)
    # Set while copies are written on the spool's threads after the session went away.
    writing: asyncio.Future[list[str]] | None = None

    @property
    def facts(self) -> MessageFacts:
        assert self.inspection is not None, "inspect runs before the steps that read facts"
        return self.inspection.facts

    async def offload(self, call: Callable[..., T], *args: object) -> T:
        """``call`` on the event loop for a small message, in a thread for a large one."""
        if self.message.size <= INLINE:
            return call(*args)
        return await asyncio.to_thread(call, *args)


Step = Callable[[Job], Awaitable[None]]


def vault_unavailable() -> TemporaryFailure:
    """451 when the vault's object store (Swift) cannot be reached: nothing was kept."""
    return TemporaryFailure(bilingual(
        "Le coffre de Pli, où vont les documents protégés, ne répond pas : message non "
        "envoyé, il reste dans votre messagerie ; réessayez dans quelques minutes et "
        "prévenez votre prestataire informatique si cela dure",
        "Pli's vault, where protected documents are kept, does not answer: the message was "
        "not sent and stays in your mail client; try again in a few minutes, and tell your "
        "IT provider if this goes on"), code=451, status="4.3.0")


class Pipeline:
    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)

    async def process(self, submission: Submission) -> str:
        try:
            return await self._process(submission)
        except OSError as exc:
            if isinstance(exc, StoreUnavailable) and not is_disk_full(exc):
                # Swift away: nothing was kept (no link, nothing spooled); the client
                # keeps the message and sends it again.
                log.error("pipeline.vault_unavailable", problem=str(exc),
                          user=submission.user, client=submission.client)
                raise vault_unavailable() from None
            if not is_disk_full(exc):
                raise
            # Whatever was half-written has been undone; the client keeps the message.
            log.error("pipeline.disk_full", error=exc.strerror or "no space left",
                      user=submission.user, client=submission.client)
            raise InsufficientStorage() from None

    async def _process(self, submission: Submission) -> str:
        try:
            message = await asyncio.to_thread(Message.open, submission.path) \
                if submission.received.size > INLINE else Message.open(submission.path)
        except BaseException:
            submission.path.unlink(missing_ok=True)  # nothing is kept of a message not taken
            raise
        job = Job(submission, message, submission.queue_id or new_queue_id())
        try:
            for step in self.steps:
                await step(job)
        except BaseException:
            if job.undo:
                await asyncio.to_thread(_run_undo, job)
            raise
        finally:
            if job.writing is None:
                _finish(job)
            else:  # the copies are still being written: the file is needed until then
                job.writing.add_done_callback(lambda _done: _finish(job))
        return job.queue_id


def _finish(job: Job) -> None:
    """Close the message and remove the intake's file, unless it became a queue file."""
    job.message.close()
    job.submission.path.unlink(missing_ok=True)


def _run_undo(job: Job) -> None:
    for undo in reversed(job.undo):
        try:
            undo()
        except Exception as exc:
            log.error("pipeline.undo_failed", queue_id=job.queue_id, error=type(exc).__name__)
    job.undo.clear()


# -- the steps ---------------------------------------------------------------------------

async def check_sender(job: Job) -> None:
    """The envelope sender must be one of the logged-in user's addresses (said at MAIL
    FROM already; the users file may have changed since)."""
    sender = job.submission.envelope.mail_from
    allowed = job.submission.allowed_senders
    if not is_one_of(sender, allowed):
        raise SenderNotAllowed(bilingual(
            f"Ce compte ne peut pas envoyer en tant que {sender}",
            f"You may not send as {sender} with this account"))


async def inspect_message(job: Job) -> None:
    job.inspection = await job.offload(inspect, job.message)


async def check_header(job: Job) -> None:
    """A header that receivers could read two ways is refused; the From: header must
    name only addresses the logged-in user may send as."""
    header = job.message.header
    if header.problems:
        log.info("pipeline.header_refused", queue_id=job.queue_id,
                 user=job.submission.user, problems=list(header.problems))
        raise MessageRejected(bilingual(
            "L'en-tête du message peut se lire de deux façons (" + header.problems[0] +
            ") : Pli ne l'envoie pas ; vérifiez le logiciel qui l'a écrit",
            "The message's header can be read two ways (" + header.problems[0] +
            "): Pli does not send it; check the software that wrote it"))
    values = header.get_all("from")
    if not values:
        raise MessageRejected(bilingual(
            "Le message n'a pas d'en-tête From: ; vérifiez les réglages de votre messagerie",
            "The message has no From: header; check your mail client settings"))
    addresses: list[str] = []
    for value in values:
        mailboxes = parse_addresses(value)
        if not mailboxes:
            raise MessageRejected(bilingual(
                "L'en-tête From: est illisible ; vérifiez les réglages de votre messagerie",
                "The From: header cannot be read; check your mail client settings"))
        addresses.extend(m.address for m in mailboxes)
    allowed = job.submission.allowed_senders
    for address in addresses:
        if not is_one_of(address, allowed):
            names = ", ".join(sorted(allowed))
            raise SenderNotAllowed(bilingual(
                f"L'en-tête From: indique {address}, que ce compte ne peut pas utiliser ; "
                f"utilisez {names or 'une de vos adresses'}",
                f"The From: header says {address}, which this account may not send as; "
                f"use {names or 'an address of yours'}"))


class Decide:
    """``current`` returns the policy in force, so a reload (SIGHUP) takes effect for
    the next message without touching sessions under way; one message is decided by
    one policy, even across a reload."""

    def __init__(self, current: Callable[[], Policy]) -> None:
        self.current = current

    async def __call__(self, job: Job) -> None:
        job.policy = self.current()
        job.decisions = decide(job.policy, job.submission.envelope, job.facts)


async def block(job: Job) -> None:
    assert job.decisions is not None
    reply = block_reply(job.decisions, utf8=job.submission.envelope.smtputf8)
    if reply:
        log_decisions(job)
        raise PolicyBlocked.from_reply(reply)


class PassCopy:
    """One unchanged copy for every recipient the policy passes (``passcopy``)."""

    def __init__(self, hostname: str | None = None) -> None:
        self.hostname = hostname  # for a Date: or Message-ID: a passed message lacks

    async def __call__(self, job: Job) -> None:
        assert job.decisions is not None and job.policy is not None
        passed = tuple(r for g in job.decisions.groups if g.decision.action == "pass"
                       for r in g.recipients)
        if not passed:
            return
        long_lines = job.submission.received.long_lines
        body = await job.offload(functools.partial(pass_copy, long_lines=long_lines),
                                 job.message, job.policy.tag_names, self.hostname)
        job.outgoing.append(Outgoing(job.submission.envelope.mail_from, passed, body))


class Protect:
    """Each protected group: the original sealed in the vault, a notice in its place."""

    def __init__(self, protector: Protector | None) -> None:
        self.protector = protector

    async def __call__(self, job: Job) -> None:
        assert job.decisions is not None and job.policy is not None
        for n, group in enumerate(job.decisions.groups):
            if group.decision.action != "protect":
                continue
            # A protect without settings still protects: skipping it would queue nothing.
            how = group.decision.protect or ProtectSettings()
            if self.protector is None:
                raise TemporaryFailure(bilingual(
                    "La protection n'est pas disponible sur ce serveur : message non envoyé",
                    "Protection is not available on this server, so this message was not "
                    "sent"), code=451, status="4.7.0")
            if job.parts is None:  # taken apart once, whatever the number of groups
                assert job.inspection is not None
                job.parts = await job.offload(extract, job.message, job.inspection)
            protected = await self._seal(job, group.recipients, how)
            job.undo.append(functools.partial(self.protector.vault.discard, protected.link_id))
            job.links[n] = protected.link_id
            job.outgoing.extend(protected.outgoing)

    async def _seal(self, job: Job, recipients: tuple[str, ...],
                    how: ProtectSettings) -> Protected:
        assert self.protector is not None and job.parts is not None and job.policy is not None
        sealing = asyncio.ensure_future(asyncio.to_thread(
            self.protector.protect, job.message, job.parts, job.submission.envelope.mail_from,
            recipients, how, tag_names=job.policy.tag_names))
        try:
            return await asyncio.shield(sealing)
        except asyncio.CancelledError:
            # The session went away while the thread seals: the link it makes will never
            # be sent, so it is discarded once sealed, not left until expiry; the message
            # file stays open until then.
            job.writing = asyncio.get_running_loop().create_future()
            sealing.add_done_callback(functools.partial(
                _discard_sealed, self.protector.vault, job.writing))
            raise


def _discard_sealed(vault: Vault, done: asyncio.Future[list[str]],
                    sealing: asyncio.Future[Protected]) -> None:
    loop = asyncio.get_running_loop()
    if not sealing.cancelled() and sealing.exception() is None:
        link_id = sealing.result().link_id
        try:
            discarding = loop.run_in_executor(None, vault.discard, link_id)
            discarding.add_done_callback(lambda _d: done.set_result([]))
            return
        except RuntimeError:  # the server is stopping: the unsent link expires on its own
            log.warning("pipeline.undo_failed", error="stopping")
    done.set_result([])


def log_decisions(job: Job) -> None:
    """One event per recipient group: rule, action, counts, true types, sizes, link id.

    Subjects, texts and file names are in the facts too; they are deliberately not read."""
    assert job.decisions is not None
    facts = job.facts
    for n, group in enumerate(job.decisions.groups):
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
            link=job.links.get(n),
        )


async def log_step(job: Job) -> None:
    log_decisions(job)


class Queue:
    """Write every copy to the spool, on the spool's threads; if one fails, none stays
    behind. ``on_queued`` hands each to delivery."""

    def __init__(self, spool: Spool,
                 on_queued: Callable[[str, str], None] = lambda _id, _sender: None) -> None:
        self.spool = spool
        self.on_queued = on_queued

    async def __call__(self, job: Job) -> None:
        writing = self.spool.submit(self._write, job)  # a future, straight on the threads
        try:
            job.queued = await asyncio.shield(writing)
        except asyncio.CancelledError:
            # The session went away (client gone, server stopping) while the spool was
            # being written. The thread goes on: once it is done, what it queued is
            # delivered, and only if it failed are the sealed links discarded. Undoing
            # now could leave a queued notice pointing at a discarded link.
            undo, job.undo = job.undo, []
            job.writing = writing
            writing.add_done_callback(functools.partial(self._after_cancel, job, undo))
            raise
        for queue_id in job.queued:
            self.on_queued(queue_id, job.submission.envelope.mail_from)

    def _after_cancel(self, job: Job, undo: list[Callable[[], object]],
                      writing: asyncio.Future[list[str]]) -> None:
        if writing.cancelled() or writing.exception() is not None:
            job.undo = undo
            asyncio.get_running_loop().run_in_executor(None, _run_undo, job)
            return
        for queue_id in writing.result():
            self.on_queued(queue_id, job.submission.envelope.mail_from)

    def _write(self, job: Job) -> list[str]:
        """Blocking. A copy that is the whole message unchanged is queued in the file it
        was received in (last, since the others may copy from it); the others are
        written anew, their unchanged parts copied by reference."""
        env = job.submission.envelope
        whole = (ByteRange(0, job.message.size),)
        copies = [(job.queue_id if n == 0 else f"{job.queue_id}-{n}", out)
                  for n, out in enumerate(job.outgoing)]
        adopted = next((c for c in copies if c[1].body == whole), None)
        if adopted is not None:
            copies.remove(adopted)
            copies.append(adopted)
        written: list[str] = []
        try:
            for queue_id, out in copies:
                message = QueuedMessage(
                    id=queue_id, mail_from=out.mail_from,
                    recipients=[Recipient(r) for r in out.recipients], created=time.time(),
                    size=0, route_sender=env.mail_from, smtputf8=env.smtputf8)
                if (queue_id, out) == adopted:
                    self.spool.adopt(message, job.submission.path)
                else:
                    self.spool.enqueue(message, out.body, job.message.fd)
                written.append(queue_id)
                log.info("spool.queued", queue_id=queue_id, sender=out.mail_from,
                         recipients=len(out.recipients), size=message.size,
                         user=job.submission.user, client=job.submission.client)
        except BaseException:
            for queue_id in written:
                self.spool.remove(queue_id)
            raise
        return sorted(written, key=lambda q: (len(q), q))


def default_steps(current_policy: Callable[[], Policy], protector: Protector | None,
                  spool: Spool, on_queued: Callable[[str, str], None] = lambda _i, _s: None,
                  hostname: str | None = None) -> tuple[Step, ...]:
    return (check_sender, inspect_message, check_header, Decide(current_policy), block,
            PassCopy(hostname), Protect(protector), log_step, Queue(spool, on_queued))
