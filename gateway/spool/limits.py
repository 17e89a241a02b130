"""What each upstream account may send, and when it may send next.

Providers count what one mailbox submits: Microsoft 365 takes 30 messages a minute and
10 000 recipients a day from a mailbox over SMTP AUTH, Google Workspace 2 000 messages
and 10 000 recipients a day with at most 100 recipients a message. Over a limit the
provider refuses, and a refusal costs a retry minutes later; so Pli keeps under them:

- ``max_messages_per_minute``: transactions start at least 60/N seconds apart (a pace,
  as Postfix's rate delay, rather than a burst then a wait), whichever sender of the
  account starts them, and never N + 1 within 60 seconds however late some of them
  were woken (a quarter of a second to spare: the provider counts what reaches it);
- ``max_recipients_per_day`` and ``max_messages_per_day``: counted over a rolling 24
  hours, as the providers count, in 10-minute buckets (a bucket is forgotten only once
  its last moment is 24 hours old, so the count never runs low);
- a provider that says to slow down (432 4.3.2, a 4.7.x about a rate) pauses the account
  for 30 seconds, doubling while it keeps saying so; one that says the day's quota is
  spent (550 5.4.5) blocks it for 24 hours.

The counts, the pace and the pauses are written to ``sending-limits.json`` in the data
folder (atomically), so that a restart neither forgets the day nor rushes the minute,
and ``pli queue list`` can say what waits and until when.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import Settings, Upstream
from gateway.spool.retry import BUSY_RETRY

LIMITS_FILE = "sending-limits.json"
DAY = 86400.0
BUCKET = 600.0
WINDOW_MARGIN = 0.25
"""Seconds added to the minute between a transaction and the one N before it: what
reaches the provider comes a little after Pli let it start, by a varying few ms."""


@dataclass
class AccountLimits:
    """One account's limits and what it has used of them. Times are Unix seconds."""

    per_minute: int | None = None
    recipients_per_day: int | None = None
    messages_per_day: int | None = None
    last_turn: float = 0.0  # when the latest transaction was allowed to start
    buckets: dict[int, list[int]] = field(default_factory=dict)  # start: [recipients, messages]
    paused_until: float = 0.0
    strikes: int = 0  # slow-down answers in a row
    blocked_until: float = 0.0
    reason: str = ""  # why it is paused or blocked, in words, for pli queue list
    # Taken by transactions under way, not yet counted, and the starts of the last
    # per_minute transactions (memory only).
    reserved_recipients: int = 0
    reserved_messages: int = 0
    starts: deque[float] = field(default_factory=deque)
    changed: bool = False  # since it was last written down

    @property
    def counts_the_day(self) -> bool:
        return self.recipients_per_day is not None or self.messages_per_day is not None

    @classmethod
    def of(cls, account: Upstream) -> AccountLimits:
        return cls(per_minute=account.max_messages_per_minute,
                   recipients_per_day=account.max_recipients_per_day,
                   messages_per_day=account.max_messages_per_day)

    # -- the minute and the pauses --------------------------------------------------

    @property
    def spacing(self) -> float:
        return 60.0 / self.per_minute if self.per_minute else 0.0

    def held_until(self, now: float) -> float:
        """Until when the provider asked this account to wait (0 if it did not)."""
        until = max(self.paused_until, self.blocked_until)
        return until if until > now else 0.0

    def next_turn(self, now: float) -> float:
        """The earliest moment the next transaction may start."""
        turn = max(now, self.last_turn + self.spacing, self.paused_until, self.blocked_until)
        if self.per_minute and len(self.starts) >= self.per_minute:
            turn = max(turn, self.starts[-self.per_minute] + 60.0 + WINDOW_MARGIN)
        return turn

    def take_turn(self, now: float) -> float:
        """Reserve the next turn (the caller waits until then, then says
        :meth:`started`); returns it."""
        turn = self.next_turn(now)
        if self.per_minute:
            self.last_turn = turn
            self.starts.append(turn)
            while len(self.starts) > self.per_minute:
                self.starts.popleft()
            self.changed = True
        return turn

    def started(self, turn: float, now: float) -> None:
        """The transaction given ``turn`` starts at ``now`` (later, if the loop woke it
        late): the next turns are counted from there."""
        if not self.per_minute:
            return
        self.last_turn = max(self.last_turn, now)
        for n in range(len(self.starts) - 1, -1, -1):
            if self.starts[n] == turn:
                self.starts[n] = max(turn, now)
                break

    def turns_for(self, now: float, count: int) -> list[float]:
        """When the next ``count`` transactions would start, at this pace."""
        first = self.next_turn(now)
        return [first + n * self.spacing for n in range(count)]

    def slow_down(self, now: float, first: float, longest: float, reason: str) -> float:
        """The provider said this account sends too fast: pause it, 30 seconds (or
        ``first`` if shorter) and twice as long each time in a row; returns until when."""
        self.strikes += 1
        delay = min(longest, min(first, BUSY_RETRY) * 2 ** min(self.strikes - 1, 20))
        self.paused_until = max(self.paused_until, now + delay)
        self.reason = reason
        self.changed = True
        return self.paused_until

    def block(self, now: float, reason: str) -> float:
        """The provider said the day's quota is spent: nothing more for 24 hours."""
        self.blocked_until = max(self.blocked_until, now + DAY)
        self.reason = reason
        self.changed = True
        return self.blocked_until

    def went_well(self) -> None:
        if self.strikes:
            self.strikes = 0
            self.changed = True

    # -- the day ----------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        for start in [b for b in self.buckets if b + BUCKET + DAY <= now]:
            del self.buckets[start]

    def used(self, now: float) -> tuple[int, int]:
        """Recipients and messages counted over the last 24 hours (reserved ones too)."""
        self._prune(now)
        recipients = sum(b[0] for b in self.buckets.values()) + self.reserved_recipients
        messages = sum(b[1] for b in self.buckets.values()) + self.reserved_messages
        return recipients, messages

    def reserve(self, now: float, wanted: int) -> int:
        """Take room for a transaction to ``wanted`` recipients; returns how many it may
        have today (0: none, see :meth:`room_at`). Give it back with :meth:`count`."""
        recipients, messages = self.used(now)
        if self.messages_per_day is not None and messages >= self.messages_per_day:
            return 0
        granted = wanted
        if self.recipients_per_day is not None:
            granted = max(0, min(wanted, self.recipients_per_day - recipients))
        if granted:
            self.reserved_recipients += granted
            self.reserved_messages += 1
        return granted

    def count(self, now: float, reserved: int, used: int) -> None:
        """A transaction that reserved ``reserved`` is over; ``used`` recipients were
        accepted (0: the provider took nothing, and nothing is counted)."""
        if reserved:
            self.reserved_recipients -= reserved
            self.reserved_messages -= 1
        if used and self.counts_the_day:
            self.changed = True
            bucket = self.buckets.setdefault(int(now // BUCKET * BUCKET), [0, 0])
            bucket[0] += used
            bucket[1] += 1

    def room_at(self, now: float) -> float:
        """When the day has room again for one more message (to one recipient)."""
        recipients, messages = self.used(now)
        if not self._full(recipients, messages):
            return now
        for start in sorted(self.buckets):
            recipients -= self.buckets[start][0]
            messages -= self.buckets[start][1]
            if not self._full(recipients, messages):
                return start + BUCKET + DAY
        return now + BUCKET  # only transactions under way fill it, and they end soon

    def _full(self, recipients: int, messages: int) -> bool:
        return ((self.recipients_per_day is not None and recipients >= self.recipients_per_day)
                or (self.messages_per_day is not None and messages >= self.messages_per_day))

    def describe_day(self) -> str:
        parts = []
        if self.recipients_per_day is not None:
            parts.append(f"{self.recipients_per_day} recipients")
        if self.messages_per_day is not None:
            parts.append(f"{self.messages_per_day} messages")
        return " and ".join(parts) + " a day"

    # -- on disk ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"last_turn": self.last_turn,
                "buckets": {str(k): v for k, v in sorted(self.buckets.items())},
                "paused_until": self.paused_until, "strikes": self.strikes,
                "blocked_until": self.blocked_until, "reason": self.reason}

    def restore(self, data: dict[str, Any]) -> None:
        self.last_turn = float(data.get("last_turn", 0.0))
        self.buckets = {int(k): [int(v[0]), int(v[1])]
                        for k, v in dict(data.get("buckets", {})).items()}
        self.paused_until = float(data.get("paused_until", 0.0))
        self.strikes = int(data.get("strikes", 0))
        self.blocked_until = float(data.get("blocked_until", 0.0))
        self.reason = str(data.get("reason", ""))


class SendingLimits:
    """Every account's limits, and their file (read at start, written after each change
    by whoever changed them: see :meth:`snapshot` and :func:`write`)."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.accounts = {a.name: AccountLimits.of(a) for a in settings.upstream}

    def account(self, account: Upstream) -> AccountLimits:
        return self.accounts[account.name]

    def load(self) -> None:
        """Blocking. A missing or unreadable file starts every count afresh."""
        for name, data in read(self.path).items():
            limits = self.accounts.get(name)
            if limits is not None:
                limits.restore(data)

    def changed(self) -> bool:
        """Whether anything changed since the last :meth:`snapshot`."""
        return any(limits.changed for limits in self.accounts.values())

    def snapshot(self) -> bytes:
        for limits in self.accounts.values():
            limits.changed = False
        return json.dumps({"version": 1, "accounts": {
            name: limits.to_json() for name, limits in self.accounts.items()}},
            separators=(",", ":")).encode()


def read(path: Path) -> dict[str, dict[str, Any]]:
    """The accounts' saved state, by name ({} when there is none to read)."""
    try:
        data = json.loads(path.read_bytes())
        accounts = data["accounts"]
        return {str(k): dict(v) for k, v in accounts.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write(path: Path, data: bytes) -> None:
    """Blocking: replace the file whole (temporary file, flush, rename)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

