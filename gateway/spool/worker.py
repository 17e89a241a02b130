"""The delivery loop: relays queued messages to the practice's provider.

It runs in the server's event loop and only ties the parts together: the scheduler
(:mod:`~gateway.spool.scheduler`) hands each account's senders their messages; a sender
takes a connection (:mod:`~gateway.spool.connections`), relays the message over it
(:mod:`~gateway.spool.transaction`), learns from the answers what each recipient's state
is and when to try again (:mod:`~gateway.spool.outcomes`), queues a DSN for a failure
(:mod:`~gateway.spool.dsn`), and has the spool write it all down. Outcomes are per
recipient: one the provider refused for good gets a DSN and is not tried again; the
others are not sent twice.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import aiosmtplib

from gateway.config import Settings, Upstream
from gateway.errors import reply_codes
from gateway.logs import get_logger
from gateway.spool import outcomes
from gateway.spool.connections import Connections, Holder
from gateway.spool.dsn import queue_dsn
from gateway.spool.outcomes import TemporaryError
from gateway.spool.retry import next_delay
from gateway.spool.scheduler import AccountKey, Scheduler, Wait, utc
from gateway.spool.store import Busy, QueuedFile, QueuedMessage, Recipient, Spool
from gateway.spool.transaction import relay

log = get_logger("pli.delivery")

HOLD_AFTER = 3
"""Internal errors in a row after which a message goes to hold/ (``pli queue release``)."""


class DeliveryWorker:
    def __init__(
        self, spool: Spool, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.spool = spool
        self.settings = settings
        self.clock = clock
        self.scheduler = Scheduler(spool, settings, on_account=self._start_senders, clock=clock)
        self.connections = Connections(settings)
        self._scan: asyncio.Task[None] | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._busy = 0

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self._scan = asyncio.create_task(self.scheduler.run(), name="pli-scheduler")

    async def stop(self, grace: float) -> None:
        """Stop taking work; give deliveries under way ``grace`` seconds, then cancel them.

        A cancelled delivery leaves its message queued: the provider may have it already,
        in which case it goes out twice rather than never (as with any MTA)."""
        self.scheduler.stopping = True
        if self._scan is not None:
            self._scan.cancel()
        deadline = asyncio.get_running_loop().time() + grace
        while self._busy and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._senders:
            task.cancel()
        tasks = [t for t in (self._scan, *self._senders) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._scan = None
        self._senders.clear()
        self.scheduler.clear()

    def submit(self, queue_id: str, route_sender: str) -> None:
        """A message was queued: relay it now (the pipeline's ``on_queued``)."""
        self.scheduler.submit(queue_id, route_sender)

    def wake(self) -> None:
        self.scheduler.wake()

    def _start_senders(self, key: AccountKey, queue: asyncio.Queue[str], count: int) -> None:
        for n in range(count):
            self._senders.append(asyncio.create_task(
                self._send_loop(queue), name=f"pli-sender-{key}-{n}"))

    # -- one sender -------------------------------------------------------------------

    async def _send_loop(self, queue: asyncio.Queue[str]) -> None:
        holder = Holder()
        try:
            while True:
                with self.connections.idle(holder):
                    try:
                        queue_id = await asyncio.wait_for(
                            queue.get(), self.settings.delivery.idle_close)
                    except TimeoutError:
                        queue_id = None
                if queue_id is None:
                    await self.connections.release(holder)
                    continue
                self._busy += 1
                try:
                    await self._deliver(queue_id, holder)
                except Exception as exc:  # noqa: BLE001 - one message must not stop the sender
                    log.error("delivery.internal_error", queue_id=queue_id,
                              error=type(exc).__name__)  # outside its lock: nothing kept
                finally:
                    self._busy -= 1
                    self.scheduler.done(queue_id)
                if self.connections.should_release(holder):
                    await self.connections.release(holder)  # nothing kept, or another's turn
        finally:
            await self.connections.release(holder)

    async def _deliver(self, queue_id: str, holder: Holder) -> None:
        try:
            with self.spool.locked(queue_id) as message:
                if message is None:
                    self.spool.forget(queue_id)
                    return
                try:
                    if message.pending:
                        await self._attempt(message, holder)
                    else:  # a DSN still to queue, or an outcome still to write down
                        await self._finish(message)
                except Exception as exc:  # noqa: BLE001 - a fault of Pli's, not the provider's
                    await self._internal_error(message, exc)
        except Busy:
            log.info("delivery.skipped_busy", queue_id=queue_id)

    async def _internal_error(self, message: QueuedMessage, exc: Exception) -> None:
        """Something on Pli's side failed (a bug, a spool file edited by hand): try again
        later, as after a provider's 4xx; the third time in a row, set the message aside
        in hold/ for a person, instead of trying it again and again."""
        message.internal_errors += 1
        error = type(exc).__name__
        log.error("delivery.internal_error", queue_id=message.id, error=error,
                  times=message.internal_errors)
        delivery = self.settings.delivery
        try:
            if message.internal_errors >= HOLD_AFTER:
                reason = (f"internal error ({error}) at {message.internal_errors} attempts "
                          f"in a row")
                await self.spool.run(self.spool.hold, message, reason)
                log.warning("spool.held", queue_id=message.id, error=error)
                return
            message.next_attempt = self.clock() + next_delay(
                message.internal_errors, delivery.retry_min, delivery.retry_max)
            await self.spool.run(self.spool.finish, message)
        except OSError as failed:
            log.error("spool.state_unsaved", queue_id=message.id,
                      error=failed.strerror or type(failed).__name__)

    async def _attempt(self, message: QueuedMessage, holder: Holder) -> None:
        message.waiting = ""
        pending = message.pending
        account = self.settings.upstream_for(message.route_sender)
        wait: Wait | None = None
        not_before = 0.0
        if account is None:
            outcomes.defer_all(message, f"451 4.3.5 No upstream account in pli.toml covers "
                                        f"the sender {message.route_sender}")
            tried = pending
        else:
            queued = self.spool.open_message(message.id)  # an open and a read of its end
            try:
                tried, wait = await self._transactions(message, pending, queued, account,
                                                       holder)
            finally:
                queued.close()
                await self.scheduler.save_limits()
            not_before = self.scheduler.limits.account(account).blocked_until
        now = self.clock()
        delivery = self.settings.delivery
        settled = outcomes.settle(message, tried, now, delivery, not_before=not_before)
        if settled.deferred and not_before > now and account is not None:
            message.waiting = self.scheduler.limits.account(account).reason  # the day's quota
        if wait is not None:
            settled.expired += outcomes.wait_for_limit(
                message, wait.recipients, wait.until, wait.reason, now, delivery,
                deferred=bool(settled.deferred))
            if message.waiting:
                log.info("delivery.waiting", queue_id=message.id, account=wait.account,
                         recipients=len(wait.recipients), until=utc(wait.until))
        self._log(message, settled)
        message.internal_errors = 0  # this attempt went through to the end
        await self._finish(message)

    async def _transactions(self, message: QueuedMessage, pending: list[Recipient],
                            queued: QueuedFile, account: Upstream,
                            holder: Holder) -> tuple[list[Recipient], Wait | None]:
        """As many transactions as the account's limits allow now, each to at most
        ``max_recipients_per_message``, each at its turn of ``max_messages_per_minute``.
        Returns the recipients tried, and those left to wait for a limit."""
        todo = outcomes.batches(pending, account.max_recipients_per_message)
        tried: list[Recipient] = []
        while todo:
            batch = todo.pop(0)
            rest = [*batch, *itertools.chain.from_iterable(todo)]
            granted = self.scheduler.admit(account, len(batch))
            if isinstance(granted, Wait):
                granted.recipients = rest
                return tried, granted
            if granted < len(batch):  # the rest of the day's room: the others wait
                todo.insert(0, batch[granted:])
                batch = batch[:granted]
            try:
                await self._relay(message, batch, queued, account, holder,
                                  ready=lambda: self.scheduler.turn(account))
            except TemporaryError as exc:
                outcomes.defer_all(message, exc.reply)
                self.scheduler.learn(account, [exc.reply], sent=False)
                return [*tried, *rest], None
            finally:
                self.scheduler.counted(account, granted, sum(r.state == "sent" for r in batch))
            tried += batch
            self.scheduler.learn(account, [r.reply for r in batch if r.state == "pending"],
                                 sent=any(r.state == "sent" for r in batch))
        return tried, None

    async def _relay(self, message: QueuedMessage, pending: list[Recipient],
                     queued: QueuedFile, account: Upstream, holder: Holder,
                     ready: Callable[[], Awaitable[None]]) -> None:
        """One transaction, once the connection is ``ready`` (the account's turn)."""
        delivery = self.settings.delivery
        for attempt in (1, 2):
            smtp, reused = await self.connections.get(account, holder)
            if attempt == 1:
                await ready()
                if not smtp.is_connected:  # dropped while it waited
                    continue
            try:
                await relay(smtp, message, pending, queued, self.spool.run,
                            timeout=delivery.command_timeout,
                            data_timeout=delivery.data_timeout)
                return
            except aiosmtplib.SMTPServerDisconnected as exc:
                self.connections.drop(holder)
                # A kept connection the provider closed while idle: try a fresh one once.
                if not (reused and attempt == 1):
                    raise TemporaryError(
                        f"451 4.4.2 {account.host} closed the connection ({exc})") from None
            except TemporaryError:
                self.connections.drop(holder)
                raise

    def _log(self, message: QueuedMessage, settled: outcomes.Settlement) -> None:
        for r in settled.sent:
            log.info("delivery.sent", queue_id=message.id, recipient=r.address,
                     reply=reply_codes(r.reply) or "no code")
        for r in settled.bounced:
            log.warning("delivery.bounced", queue_id=message.id, recipient=r.address,
                        reply=reply_codes(r.reply) or "no code")
        for r in settled.expired:
            log.warning("delivery.expired", queue_id=message.id, recipient=r.address)
        for r in settled.deferred:
            log.info("delivery.deferred", queue_id=message.id, recipient=r.address,
                     reply=reply_codes(r.reply) or "no code", retry_in=round(settled.delay, 1),
                     attempts=message.attempts)

    async def _finish(self, message: QueuedMessage) -> None:
        """Queue the DSN for failures not yet reported, then keep or remove the message.

        If the DSN cannot be queued, the message stays (its outcome saved, so nobody gets
        it twice) and the DSN is tried again later: a failure is never left untold."""
        unreported = message.unreported
        if unreported:
            try:
                await self._bounce(message, unreported)
                for r in unreported:
                    r.reported = True
            except Exception as exc:  # noqa: BLE001 - told at a later attempt
                log.error("dsn.failed", queue_id=message.id, error=type(exc).__name__)
                message.next_attempt = self.clock() + self.settings.delivery.retry_min
        try:
            # A message served to everyone is removed with two unlinks (no fsync): on the
            # event loop; a state to write down (fsync'd) goes to the spool's threads.
            done = not (message.pending or message.unreported)
            if self.spool.finish(message) if done else await self.spool.run(
                    self.spool.finish, message):
                log.info("spool.removed", queue_id=message.id)
        except OSError as exc:
            # Delivered but not written down (a full disk): the spool keeps it in memory.
            log.error("spool.state_unsaved", queue_id=message.id,
                      error=exc.strerror or type(exc).__name__)

    async def _bounce(self, message: QueuedMessage, failed: list[Recipient]) -> None:
        if not outcomes.wants_dsn(message):
            log.warning("delivery.dsn_dropped", queue_id=message.id)  # never bounce a bounce
            return
        notice = await self.spool.run(queue_dsn, self.spool, message, failed,
                                      self.settings.hostname, self.clock())
        log.info("dsn.queued", queue_id=notice.id, about=message.id, recipient=message.mail_from,
                 failed=len(failed))
        self.submit(notice.id, notice.route_sender)
