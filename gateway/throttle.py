"""Failures per client address within a sliding window, with bounded memory.

Shared by the SMTP intake (wrong passwords) and the portal (wrong access codes): each
decides what a number of recent failures means; this only counts them."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RecentFailures:
    def __init__(
        self,
        window: float,
        *,
        keep: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.keep = keep  # more than this many per client are never needed
        self.max_clients = max_clients
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        """How many client addresses are remembered."""
        return len(self._failures)

    def add(self, client: str) -> int:
        """Record a failure now; return how many this client has in the window."""
        failures = self._recent(client)
        if failures is None:
            self._make_room()
            failures = self._failures[client] = deque(maxlen=self.keep)
        failures.append(self.clock())
        return len(failures)

    def count(self, client: str) -> int:
        failures = self._recent(client)
        return len(failures) if failures else 0

    def oldest(self, client: str) -> float | None:
        failures = self._recent(client)
        return failures[0] if failures else None

    def clear(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        horizon = self.clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def _make_room(self) -> None:
        if len(self._failures) < self.max_clients:
            return
        horizon = self.clock() - self.window
        for client in [c for c, f in self._failures.items() if not f or f[-1] <= horizon]:
            del self._failures[client]
        while len(self._failures) >= self.max_clients:
            del self._failures[next(iter(self._failures))]  # the longest-known client
