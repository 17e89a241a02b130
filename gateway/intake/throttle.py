"""Failed logins per client address: each failure beyond a few is answered more slowly,
and past a limit the address gets 454 4.7.0 until a lockout period has passed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class AuthThrottle:
    def __init__(
        self,
        *,
        delay_after: int,
        max_failures: int,
        window: float,
        lockout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.delay_after = delay_after
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def locked(self, client: str) -> bool:
        record = self._records.get(client)
        return bool(record and record.locked_until > self._clock())

    def failed(self, client: str) -> float:
        """Record a failure; return how many seconds to wait before answering it."""
        now = self._clock()
        record = self._records.setdefault(client, _Record())
        record.failures = [t for t in record.failures if now - t < self.window] + [now]
        count = len(record.failures)
        if count >= self.max_failures:
            record.locked_until = now + self.lockout
            record.failures.clear()
        self._forget_old(now)
        return float(min(max(0, count - self.delay_after), 5))

    def succeeded(self, client: str) -> None:
        self._records.pop(client, None)

    def _forget_old(self, now: float) -> None:
        if len(self._records) < 1024:
            return
        for key in [k for k, r in self._records.items()
                    if r.locked_until <= now and not r.failures]:
            del self._records[key]
