"""Failed logins per client address: each failure beyond a few is answered more slowly,
and past a limit the address gets 454 4.7.0 until a lockout period has passed.

Password checks from one address run in parallel only as far as the failures still
allowed: with 2 failures left, at most 2 checks are under way for that address and the
next waits for one of them to finish. Wrong passwords sent on many connections at once
therefore never get more checks than the limit, while right ones (a practice behind one
NAT address, a client opening several connections) only wait their turn, never get 454."""

from __future__ import annotations

import asyncio
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
        self._checking: dict[str, int] = {}  # password checks under way, per address
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    def locked(self, client: str) -> bool:
        until = self._locked.get(client)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._locked[client]
        return False

    async def admit(self, client: str) -> bool:
        """Wait until a password check from ``client`` may start; False if the address
        is locked out. Every True must be followed by one ``done(client)``."""
        while True:
            if self.locked(client):
                return False
            checking = self._checking.get(client, 0)
            if self._failures.count(client) + checking < self.max_failures:
                self._checking[client] = checking + 1
                return True
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(client, []).append(waiter)
            try:
                await waiter
            finally:
                waiters = self._waiting.get(client, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiting.pop(client, None)

    def done(self, client: str) -> None:
        """A check admitted by ``admit`` is over (its failure, if any, already recorded)."""
        checking = self._checking.get(client, 0) - 1
        if checking > 0:
            self._checking[client] = checking
        else:
            self._checking.pop(client, None)
        for waiter in self._waiting.get(client, []):
            if not waiter.done():
                waiter.set_result(None)

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
        """The right password: earlier failures are forgiven."""
        self._failures.clear(client)
        self._locked.pop(client, None)
