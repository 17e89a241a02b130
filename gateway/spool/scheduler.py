"""Which message goes next, through which account, and when.

New messages are handed over by the intake as they are queued; deferred ones are found
by a scan of the spool (on a thread: it reads files), every ``scan_interval`` or sooner
when the next one falls due, and at once after ``pli queue flush`` (a marker file in the
spool, and SIGUSR1). Each upstream account has its own queue, so one practitioner's
batch of letters does not hold up a colleague's message; a message is claimed by one
sender at a time. Each account's sending limits (:mod:`~gateway.spool.limits`) say when
its next transaction may start and how many recipients it may still have today.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.config import Settings, Upstream
from gateway.errors import reply_codes
from gateway.logs import get_logger
from gateway.spool.limits import LIMITS_FILE, SendingLimits, write
from gateway.spool.outcomes import is_quota_reply, is_rate_reply
from gateway.spool.store import Recipient, Spool

log = get_logger("pli.delivery")

FLUSH_MARKER = "flush"

AccountKey = str | None  # an [[upstream]] account's name; None for senders none covers


@dataclass
class Wait:
    """Recipients not tried now because of a sending limit, until when, and why."""

    account: str
    until: float
    reason: str
    recipients: list[Recipient] = field(default_factory=list)


def utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scheduler:
    def __init__(self, spool: Spool, settings: Settings, *,
                 on_account: Callable[[AccountKey, asyncio.Queue[str], int], None],
                 clock: Callable[[], float] = time.time) -> None:
        """``on_account(key, queue, senders)`` is called when an account first has mail:
        the delivery loop starts that many senders on that queue."""
        self.spool = spool
        self.settings = settings
        self.clock = clock
        self._on_account = on_account
        self._queues: dict[AccountKey, asyncio.Queue[str]] = {}
        self._claimed: set[str] = set()
        self._wake = asyncio.Event()
        self.stopping = False
        self.limits = SendingLimits(settings.data_dir / LIMITS_FILE, settings)
        self.limits.load()
        self._saving = False
        self._unsaved_limits = False

    def submit(self, queue_id: str, route_sender: str) -> None:
        """A message was queued (or is due again): hand it to the senders of the account
        ``route_sender`` goes out with, unless one has it already. Once stopping, it
        stays in the spool for the next start."""
        if queue_id in self._claimed or self.stopping:
            return
        self._claimed.add(queue_id)
        self._queue_for(route_sender).put_nowait(queue_id)

    def done(self, queue_id: str) -> None:
        """A sender is through with the message (delivered, deferred, or gone)."""
        self._claimed.discard(queue_id)

    def _queue_for(self, route_sender: str) -> asyncio.Queue[str]:
        account = self.settings.upstream_for(route_sender)
        key = account.name if account is not None else None
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            # Mail no account covers is only deferred: one sender will do.
            self._on_account(key, queue,
                             self.settings.delivery.concurrency if account is not None else 1)
        return queue

    def wake(self) -> None:
        self._wake.set()

    # -- the accounts' limits -----------------------------------------------------------

    def admit(self, account: Upstream, recipients: int) -> int | Wait:
        """May a transaction to ``recipients`` start for the account now: how many of
        them it may have today, or until when everything waits."""
        limits = self.limits.account(account)
        now = self.clock()
        held = limits.held_until(now)
        if held:  # the provider asked the account to wait
            return Wait(account.name, held, limits.reason)
        granted = limits.reserve(now, recipients)
        if not granted:
            return Wait(account.name, limits.room_at(now),
                        f"account {account.name!r} has reached its limit of "
                        f"{limits.describe_day()}")
        return granted

    async def turn(self, account: Upstream) -> None:
        """Wait for the account's next turn (``max_messages_per_minute``), so that its
        MAIL commands reach the provider at its pace, whichever connection sends them."""
        limits = self.limits.account(account)
        now = self.clock()
        turn = limits.take_turn(now)
        if turn > now:
            await asyncio.sleep(turn - now)
        limits.started(turn, self.clock())  # a late wake-up moves the next turns with it

    def counted(self, account: Upstream, granted: int, accepted: int) -> None:
        """A transaction admitted for ``granted`` recipients is over; ``accepted`` took."""
        self.limits.account(account).count(self.clock(), granted, accepted)

    def learn(self, account: Upstream, replies: list[str], *, sent: bool) -> None:
        """A provider's words about the account's pace: slow down, or stop for the day."""
        limits = self.limits.account(account)
        now = self.clock()
        quota = next((r for r in replies if is_quota_reply(r)), None)
        rate = next((r for r in replies if is_rate_reply(r)), None)
        if quota is not None:
            codes = reply_codes(quota) or "no code"
            until = limits.block(now, f"the provider said account {account.name!r} has used "
                                      f"its sending quota for the day ({codes})")
            log.warning("upstream.rate_limited", account=account.name, reply=codes,
                        until=utc(until), quota=True)
        elif rate is not None:
            codes = reply_codes(rate) or "no code"
            delivery = self.settings.delivery
            until = limits.slow_down(now, delivery.retry_min, delivery.retry_max,
                                     f"the provider asked account {account.name!r} to "
                                     f"slow down ({codes})")
            log.warning("upstream.rate_limited", account=account.name, reply=codes,
                        until=utc(until), quota=False)
        elif sent:
            limits.went_well()

    async def save_limits(self) -> None:
        """Write the accounts' limits down after a change; changes made while a write is
        under way go in the next one, so writes never pile up."""
        if not self.limits.changed():
            return
        self._unsaved_limits = True
        if self._saving:
            return
        self._saving = True
        try:
            while self._unsaved_limits:
                self._unsaved_limits = False
                await self.spool.run(write, self.limits.path, self.limits.snapshot())
        except OSError as exc:  # the counts stay in memory; the next change tries again
            for limits in self.limits.accounts.values():
                limits.changed = True
            log.error("delivery.limits_unsaved", error=exc.strerror or type(exc).__name__)
        finally:
            self._saving = False

    def clear(self) -> None:
        self._queues.clear()

    async def run(self) -> None:
        """Scan the spool for due messages, forever (cancelled at stop)."""
        while True:
            # Cleared before the scan, so a wake-up (pli queue flush) during it is not lost.
            self._wake.clear()
            try:
                due, soonest = await asyncio.to_thread(self._scan)
            except Exception as exc:  # noqa: BLE001 - a failed scan must not end every later one
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
        for message in self.spool.messages():
            if flush or message.next_attempt <= now:
                due.append((message.id, message.route_sender))
            elif soonest is None or message.next_attempt < soonest:
                soonest = message.next_attempt
        return due, soonest
