"""Failed logins per client address: each failure beyond a few is answered more slowly,
and past a limit the address gets 454 4.7.0 until a lockout period has passed."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.throttle import RecentFailures


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
        self.lockout = lockout
        self._clock = clock
        self._failures = RecentFailures(window, keep=max_failures, clock=clock)
        self._locked: dict[str, float] = {}

    def locked(self, client: str) -> bool:
        until = self._locked.get(client)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._locked[client]
        return False

    def failed(self, client: str) -> float:
        """Record a failure; return how many seconds to wait before answering it."""
        count = self._failures.add(client)
        if count >= self.max_failures:
            now = self._clock()
            if len(self._locked) >= 10_000:
                self._locked = {c: t for c, t in self._locked.items() if t > now}
            self._locked[client] = now + self.lockout
            self._failures.clear(client)
        return float(min(max(0, count - self.delay_after), 5))

    def succeeded(self, client: str) -> None:
        """The right password: its own attempt, counted beforehand, and earlier failures
        are forgiven (a lock it may have tipped over included)."""
        self._failures.clear(client)
        self._locked.pop(client, None)
