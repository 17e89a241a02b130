"""Sessions open at once, in all and per client address, and the time a client has to
log in: without them, one machine opening connections and saying nothing could hold
every file descriptor the server has (Postfix likewise allows 50 per client)."""

from __future__ import annotations


class SessionLimits:
    def __init__(self, *, total: int, per_client: int, login_timeout: float) -> None:
        self.total = total
        self.per_client = per_client
        self.login_timeout = login_timeout
        self._open: dict[str, int] = {}
        self._count = 0

    def admit(self, client: str) -> str | None:
        """Count a new session from ``client``; or, over a limit, say which and count
        nothing."""
        if self._count >= self.total:
            return "total"
        if self._open.get(client, 0) >= self.per_client:
            return "client"
        self._open[client] = self._open.get(client, 0) + 1
        self._count += 1
        return None

    def leave(self, client: str) -> None:
        left = self._open.get(client, 0) - 1
        if left > 0:
            self._open[client] = left
        else:
            self._open.pop(client, None)
        self._count = max(0, self._count - 1)

    @property
    def open(self) -> int:
        return self._count
