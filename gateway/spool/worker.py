"""The delivery worker: relays queued messages to the practice's provider with aiosmtplib.

It runs in the server's event loop. A scheduler finds messages that are due (new ones are
handed over directly by the intake; deferred ones are found by a periodic scan of the
spool). Each upstream account has its own queue and its own senders, as many as
``[delivery] concurrency``, each keeping its connection to the provider open while there
is work: providers limit connections per account, not per practice, and one
practitioner's batch of letters does not hold up a colleague's message. All accounts
together open at most ``[delivery] max_connections``: a sender needs one of that many
slots to open a connection; when none is free, a connection kept open while idle is
closed to make room, and while others wait, a sender gives its slot back after each
message. Outcomes are per recipient: one the provider refused for good gets a DSN and is
not tried again; the others are not sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable

import aiosmtplib

from gateway.config import Settings, Upstream
from gateway.errors import reply_codes
from gateway.logs import get_logger
from gateway.spool.dsn import build_dsn
from gateway.spool.retry import BUSY_RETRY, expired, is_busy_reply, next_delay
from gateway.spool.store import Busy, QueuedFile, QueuedMessage, Recipient, Spool, new_queue_id
from gateway.spool.transaction import TemporaryError, read_blocks, send

log = get_logger("pli.delivery")

FLUSH_MARKER = "flush"




class _Sender:
    """One sender's connections (at most one: a sender serves one account) and whether
    it holds one of the practice-wide connection slots."""

    __slots__ = ("connections", "slot")

    def __init__(self) -> None:
        self.connections: dict[str, aiosmtplib.SMTP] = {}
        self.slot = False


class DeliveryWorker:
    def __init__(
        self, spool: Spool, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.spool = spool
        self.settings = settings
        self.clock = clock
        # One queue per upstream account (by name; None for senders no account covers),
        # each with its senders, made when the account first has mail.
        self._queues: dict[str | None, asyncio.Queue[str]] = {}
        self._claimed: set[str] = set()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._stopping = False
        self._busy = 0
        # Connections open at once, all accounts together: a slot per connection.
        self._slots = asyncio.Semaphore(settings.delivery.max_connections)
        self._slot_waiters = 0
        self._idle: set[_Sender] = set()  # holding a slot, waiting for mail
        self._tls_contexts: dict[str, ssl.SSLContext] = {}
        # Outcomes the disk would not take (full): kept here until it does, so that a
        # recipient already delivered is not sent again and retries keep their pace.
        self._unsaved: dict[str, QueuedMessage] = {}

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler = asyncio.create_task(self._schedule(), name="pli-scheduler")

    async def stop(self, grace: float) -> None:
        """Stop taking work; give deliveries under way ``grace`` seconds, then cancel them.

        A cancelled delivery leaves its message queued: the provider may have it already,
        in which case it goes out twice rather than never (as with any MTA)."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.cancel()
        deadline = asyncio.get_running_loop().time() + grace
        while self._busy and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._senders:
            task.cancel()
        tasks = [t for t in (self._scheduler, *self._senders) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._scheduler = None
        self._senders.clear()
        self._queues.clear()

    def submit(self, queue_id: str, route_sender: str) -> None:
        """A message was queued (or is due again): relay it now, through the senders of
        the account that ``route_sender`` goes out with. Once stopping, it stays in the
        spool for the next start."""
        if queue_id in self._claimed or self._stopping:
            return
        self._claimed.add(queue_id)
        self._queue_for(route_sender).put_nowait(queue_id)

    def _queue_for(self, route_sender: str) -> asyncio.Queue[str]:
        account = self.settings.upstream_for(route_sender)
        key = account.name if account is not None else None
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            # Mail no account covers is only deferred (see _attempt): one sender will do.
            count = self.settings.delivery.concurrency if account is not None else 1
            for n in range(count):
                self._senders.append(asyncio.create_task(
                    self._send_loop(queue), name=f"pli-sender-{key}-{n}"))
        return queue

    def wake(self) -> None:
        self._wake.set()

    # -- scheduling -------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            # Cleared before the scan, so a wake-up (pli queue flush) during it is not lost.
            self._wake.clear()
            try:
                due, soonest = await asyncio.to_thread(self._scan)
            except Exception as exc:  # a failed scan must not end every later one
                log.error("delivery.scan_failed", error=type(exc).__name__)
                due, soonest = [], None
            # Back in the loop: the queues and the claimed set are not thread-safe.
            for queue_id, route_sender in due:
                self.submit(queue_id, route_sender)
            wait = self.settings.delivery.scan_interval
            if soonest is not None:
                wait = max(0.05, min(wait, soonest - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _scan(self) -> tuple[list[tuple[str, str]], float | None]:
        """Find due messages (in a worker thread: reads the spool, changes nothing else
        shared); return them and when the next deferred one falls due."""
        marker = self.spool.root / FLUSH_MARKER
        flush = marker.exists()
        if flush:
            marker.unlink(missing_ok=True)
            log.info("queue.flushed")
        now = self.clock()
        due: list[tuple[str, str]] = []
        soonest: float | None = None
        unsaved = dict(self._unsaved)  # one atomic copy: the loop may change it meanwhile
        for message in self.spool.messages():
            message = unsaved.get(message.id, message)
            if flush or message.next_attempt <= now:
                due.append((message.id, message.route_sender))
            elif soonest is None or message.next_attempt < soonest:
                soonest = message.next_attempt
        return due, soonest

    # -- sending ----------------------------------------------------------------------

    async def _send_loop(self, queue: asyncio.Queue[str]) -> None:
        me = _Sender()
        try:
            while True:
                if me.slot:
                    self._idle.add(me)
                try:
                    queue_id: str | None = await asyncio.wait_for(
                        queue.get(), self.settings.delivery.idle_close
                    )
                except TimeoutError:
                    queue_id = None
                finally:
                    self._idle.discard(me)
                if queue_id is None:
                    await self._release(me)
                    continue
                self._busy += 1
                try:
                    await self._deliver(queue_id, me)
                except Exception as exc:  # never let one message stop the sender
                    log.error("delivery.internal_error", queue_id=queue_id,
                              error=type(exc).__name__)
                finally:
                    self._busy -= 1
                    self._claimed.discard(queue_id)
                if me.slot and (not me.connections or self._slot_waiters):
                    await self._release(me)  # nothing kept open, or someone else's turn
        finally:
            await self._release(me)

    async def _acquire(self, me: _Sender) -> None:
        """Take a connection slot, closing a connection another sender keeps idle if
        none is free."""
        if me.slot:
            return
        self._slot_waiters += 1
        try:
            if self._slots.locked() and self._idle:
                await self._release(self._idle.pop())
            await self._slots.acquire()
            me.slot = True
        finally:
            self._slot_waiters -= 1

    async def _release(self, sender: _Sender) -> None:
        """Close the sender's connection (QUIT first), then give its slot back. The sender
        may wake meanwhile: it then finds neither connection nor slot, and waits its turn."""
        held, sender.slot = sender.slot, False
        connections = dict(sender.connections)
        sender.connections.clear()
        try:
            await _close_all(connections)
        finally:
            if held:
                self._slots.release()

    async def _deliver(self, queue_id: str, me: _Sender) -> None:
        try:
            with self.spool.locked(queue_id) as message:
                if message is None:
                    self._unsaved.pop(queue_id, None)
                    return
                message = self._unsaved.get(queue_id, message)
                if message.pending:
                    await self._attempt(message, me)
                elif message.unreported or queue_id in self._unsaved:
                    await self._finish(message)  # a DSN to queue, or an outcome to save
        except Busy:
            log.info("delivery.skipped_busy", queue_id=queue_id)

    async def _attempt(self, message: QueuedMessage, me: _Sender) -> None:
        pending = message.pending
        account = self.settings.upstream_for(message.route_sender)
        if account is None:
            self._defer_all(message, f"451 4.3.5 No upstream account in pli.toml covers "
                                     f"the sender {message.route_sender}")
        else:
            queued = await self.spool.run(self.spool.open_message, message.id)
            try:
                await self._relay(message, pending, queued, account, me)
            except TemporaryError as exc:
                self._defer_all(message, exc.reply)
            finally:
                queued.close()
        await self._settle(message, pending)

    async def _relay(
        self,
        message: QueuedMessage,
        pending: list[Recipient],
        queued: QueuedFile,
        account: Upstream,
        me: _Sender,
    ) -> None:
        connections = me.connections
        for attempt in (1, 2):
            smtp, reused = await self._connection(account, me)
            try:
                await self._transaction(smtp, message, pending, queued)
                return
            except aiosmtplib.SMTPServerDisconnected as exc:
                connections.pop(account.name, None)
                smtp.close()
                # A kept connection the provider closed while idle: try a fresh one once.
                if not (reused and attempt == 1):
                    raise TemporaryError(
                        f"451 4.4.2 {account.host} closed the connection ({exc})"
                    ) from None
            except TemporaryError:
                connections.pop(account.name, None)
                smtp.close()
                raise

    async def _transaction(
        self,
        smtp: aiosmtplib.SMTP,
        message: QueuedMessage,
        pending: list[Recipient],
        queued: QueuedFile,
    ) -> None:
        options = []
        head = queued.read(0, min(queued.size, 64 * 1024))
        if _needs_smtputf8(message, pending, head):
            if not smtp.supports_extension("smtputf8"):
                for r in pending:  # no later attempt can do better: tell the sender now
                    r.state, r.reply = "failed", (
                        "550 5.6.7 The provider does not accept internationalised addresses "
                        "(SMTPUTF8), which this message needs")
                return
            options.append("SMTPUTF8")
        if smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        delivery = self.settings.delivery
        try:
            await send(smtp, message, pending, read_blocks(queued, self.spool.run),
                       size=queued.size, options=options, timeout=delivery.command_timeout,
                       data_timeout=delivery.command_timeout)
        except aiosmtplib.SMTPServerDisconnected:
            raise
        except TemporaryError:
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporaryError(f"451 4.4.2 Delivery interrupted: {type(exc).__name__}") from None

    def _tls_context(self, account: Upstream) -> ssl.SSLContext:
        """One context per account, made once: loading the CA store for every connection
        costs more than the rest of the TLS set-up."""
        context = self._tls_contexts.get(account.name)
        if context is None:
            context = ssl.create_default_context(
                cafile=str(account.ca_file) if account.ca_file else None)
            if not account.verify_certificate:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls_contexts[account.name] = context
        return context

    async def _connection(self, account: Upstream, me: _Sender) -> tuple[aiosmtplib.SMTP, bool]:
        smtp = me.connections.get(account.name)
        if smtp is not None and smtp.is_connected:
            return smtp, True
        await self._acquire(me)
        delivery = self.settings.delivery
        smtp = aiosmtplib.SMTP(
            hostname=account.host,
            port=account.port,
            use_tls=account.security == "tls",
            start_tls=False,  # done below, so that a provider without it can be named
            tls_context=self._tls_context(account),
            timeout=delivery.command_timeout,
            local_hostname=self.settings.hostname,
        )
        where = f"{account.host}:{account.port}"
        try:
            await smtp.connect(timeout=delivery.connect_timeout)
            if account.security == "starttls":
                await smtp.ehlo()
                if not smtp.supports_extension("starttls"):
                    smtp.close()
                    raise TemporaryError(
                        f"451 4.7.4 The provider {where} does not offer STARTTLS, which account "
                        f"{account.name!r} requires: Pli does not send mail in clear"
                    )
                await smtp.starttls()
            if account.username:
                await smtp.login(account.username, account.password() or "")
            else:
                await smtp.ehlo()
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise TemporaryError(
                f"451 4.7.0 The provider {where} refused Pli's login for account "
                f"{account.name!r} ({exc.code} {exc.message}); check the upstream password"
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            raise TemporaryError(f"451 4.4.1 {where} answered {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            untrusted = _certificate_error(exc)
            if untrusted is not None:
                raise TemporaryError(
                    f"451 4.7.5 The provider {where} presented a certificate Pli does not "
                    f"trust ({untrusted.verify_message}); check ca_file for account "
                    f"{account.name!r}"
                ) from None
            raise TemporaryError(
                f"451 4.4.1 Cannot reach the provider {where} ({type(exc).__name__})"
            ) from None
        me.connections[account.name] = smtp
        return smtp, False

    # -- outcomes ---------------------------------------------------------------------

    def _defer_all(self, message: QueuedMessage, reply: str) -> None:
        message.last_error = reply
        for r in message.pending:
            r.reply = reply

    async def _settle(self, message: QueuedMessage, tried: list[Recipient]) -> None:
        now = self.clock()
        delivery = self.settings.delivery
        for r in tried:
            if r.state == "sent":
                log.info("delivery.sent", queue_id=message.id, recipient=r.address,
                         reply=reply_codes(r.reply) or "no code")
            elif r.state == "failed":
                log.warning("delivery.bounced", queue_id=message.id, recipient=r.address,
                            reply=reply_codes(r.reply) or "no code")
        still = message.pending
        if still:
            message.attempts += 1
            if expired(message.created, now, delivery.lifetime):
                for r in still:
                    r.state = "failed"
                    r.reply = (f"{r.reply or message.last_error} (Pli gave up after "
                               f"{_span(delivery.lifetime)} of retries)")
                    log.warning("delivery.expired", queue_id=message.id, recipient=r.address)
            else:
                first = delivery.retry_min
                if all(is_busy_reply(r.reply or "") for r in still):
                    first = min(first, BUSY_RETRY)  # busy, not down: 30 s, 60 s, 120 s...
                delay = next_delay(message.attempts, first, delivery.retry_max)
                message.next_attempt = now + delay
                for r in still:
                    log.info("delivery.deferred", queue_id=message.id, recipient=r.address,
                             reply=reply_codes(r.reply) or "no code", retry_in=round(delay, 1),
                             attempts=message.attempts)
        await self._finish(message)

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
            except Exception as exc:
                log.error("dsn.failed", queue_id=message.id, error=type(exc).__name__)
                message.next_attempt = self.clock() + self.settings.delivery.retry_min
        try:
            if message.pending or message.unreported:
                await self.spool.run(self.spool.save, message)
            else:
                await self.spool.run(self.spool.remove, message.id)
                log.info("spool.removed", queue_id=message.id)
        except OSError as exc:
            # Delivered but not written down (a full disk): the next attempt goes by what
            # is kept here. Only a restart before the disk takes it could send twice.
            self._unsaved[message.id] = message
            log.error("spool.state_unsaved", queue_id=message.id,
                      error=exc.strerror or type(exc).__name__)
            return
        self._unsaved.pop(message.id, None)

    async def _bounce(self, message: QueuedMessage, failed: list[Recipient]) -> None:
        if message.kind == "dsn" or not message.mail_from:
            log.warning("delivery.dsn_dropped", queue_id=message.id)  # never bounce a bounce
            return
        header = await self.spool.run(self.spool.header_block, message.id)
        dsn = build_dsn(message, failed, header, self.settings.hostname)
        notice = QueuedMessage(
            id=new_queue_id(),
            mail_from="",
            recipients=[Recipient(message.mail_from)],
            created=self.clock(),
            size=len(dsn),
            route_sender=message.route_sender,
            smtputf8=not message.mail_from.isascii(),
            kind="dsn",
            extra={"about": message.id},
        )
        await self.spool.run(self.spool.enqueue, notice, dsn)
        log.info("dsn.queued", queue_id=notice.id, about=message.id, recipient=message.mail_from,
                 failed=len(failed))
        self.submit(notice.id, notice.route_sender)


def _needs_smtputf8(message: QueuedMessage, pending: list[Recipient], head: bytes) -> bool:
    """As Postfix decides: only an address or a header that is not ASCII needs SMTPUTF8. A
    client that asked for it out of habit must not make plain mail undeliverable through a
    provider that does not offer it. ``head`` is the message's first bytes."""
    if not message.smtputf8:
        return False
    addresses = [message.mail_from, *(r.address for r in pending)]
    headers = head.split(b"\r\n\r\n", 1)[0]
    return not (all(a.isascii() for a in addresses) and headers.isascii())


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind a connection error (aiosmtplib wraps it for TLS)."""
    seen: BaseException | None = exc
    for _ in range(5):  # a short chain; never loop on a cyclic one
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _span(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"


async def _close_all(connections: dict[str, aiosmtplib.SMTP]) -> None:
    for smtp in list(connections.values()):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(smtp.quit(), 5)
        smtp.close()
    connections.clear()
