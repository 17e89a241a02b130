"""OpenStack Swift's native API over plain HTTP: v1 authentication and pooled connections.

Swift's v1 auth (tempauth, swauth, and the v1 endpoints providers offer): a GET to the
auth URL with ``X-Auth-User`` and ``X-Auth-Key`` answers with ``X-Storage-Url`` (the
account) and ``X-Auth-Token``. The token is kept and used until Swift answers 401 (or the
lifetime it was given runs out): then Pli logs in again, once, and repeats the request,
except a streamed upload, whose body cannot be sent twice (it fails; the message is
tried again by its client). The key is read at each login, so a rotated key needs no
restart.

Only the standard library: http.client, one connection per request under way, idle ones
kept for the next. Errors of the network or of Swift become :class:`StoreUnavailable`
(an OSError; ``errno.ENOSPC`` when Swift says it has no room, 507).
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlencode, urlsplit

from gateway.vault.objects import StoreUnavailable

TOKEN_MARGIN = 60.0
"""A token is renewed this many seconds before the lifetime Swift gave it runs out."""
MAX_IDLE = 8

Connection = http.client.HTTPConnection


class SwiftAccount:
    """A Swift account reached with v1 auth. ``key`` is called at each login."""

    def __init__(self, auth_url: str, user: str, key: Callable[[], str], *,
                 timeout: float = 30.0, ca_file: str | None = None) -> None:
        self.auth_url = auth_url
        self.user = user
        self._key = key
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=ca_file)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._storage: tuple[str, str, int, str] | None = None  # scheme, host, port, path
        self._idle: list[Connection] = []
        self.host = urlsplit(auth_url).hostname or auth_url

    # -- logging in ---------------------------------------------------------------------

    def _connect(self, scheme: str, host: str, port: int) -> Connection:
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=self._context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _login(self) -> None:
        url = urlsplit(self.auth_url)
        scheme = url.scheme or "https"
        connection = self._connect(scheme, url.hostname or "", url.port or
                                   (443 if scheme == "https" else 80))
        try:
            connection.request("GET", url.path or "/auth/v1.0", headers={
                "X-Auth-User": self.user, "X-Auth-Key": self._key()})
            answer = connection.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException) as exc:
            raise StoreUnavailable(f"Swift at {self.host} cannot be reached for a login: "
                                   f"{_why(exc)}") from None
        finally:
            connection.close()
        if answer.status in (401, 403):
            raise StoreUnavailable(f"Swift at {self.host} refused the user {self.user!r} and "
                                   "its key (auth answered " f"{answer.status})")
        token = answer.getheader("X-Auth-Token") or answer.getheader("X-Storage-Token")
        storage = answer.getheader("X-Storage-Url")
        if answer.status // 100 != 2 or not token or not storage:
            raise StoreUnavailable(f"Swift at {self.host} gave no token (auth answered "
                                   f"{answer.status})")
        where = urlsplit(storage)
        scheme = where.scheme or "https"
        address = (scheme, where.hostname or "", where.port or
                   (443 if scheme == "https" else 80), where.path.rstrip("/"))
        if scheme != "https" and not _is_loopback(address[1]):
            raise StoreUnavailable(f"Swift at {self.host} gave a storage address in clear "
                                   f"({scheme}://{address[1]}): the token would travel in it")
        lifetime = _seconds(answer.getheader("X-Auth-Token-Expires"))
        with self._lock:
            self._token = token
            self._token_expires = (float("inf") if lifetime is None
                                   else time.monotonic() + lifetime - TOKEN_MARGIN)
            if self._storage != address:  # connections to another place are of no use
                for idle in self._idle:
                    idle.close()
                self._idle.clear()
            self._storage = address

    def credentials(self) -> tuple[str, str]:
        """A token still within its lifetime, and the account's path."""
        with self._lock:
            fresh = self._token is not None and time.monotonic() < self._token_expires
        if not fresh:
            self._login()
        with self._lock:
            assert self._token is not None and self._storage is not None
            return self._token, self._storage[3]

    def forget_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    # -- connections --------------------------------------------------------------------

    def connection(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            assert self._storage is not None
            scheme, host, port, _ = self._storage
        return self._connect(scheme, host, port)

    def release(self, connection: Connection) -> None:
        """Give back a connection whose last answer was read to its end."""
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close the idle connections (a later request opens new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def path(self, *names: str, query: Mapping[str, str] | None = None) -> str:
        """The account's path, then ``names`` (each quoted), then ``query``."""
        _, account = self.credentials()
        tail = "".join("/" + quote(n, safe="") for n in names)
        return account + tail + ("?" + urlencode(query) if query else "")

    # -- requests -----------------------------------------------------------------------

    def request(self, method: str, names: tuple[str, ...], *,
                query: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None,
                ok: tuple[int, ...] = (200, 201, 202, 204),
                missing: bool = False) -> tuple[http.client.HTTPResponse, bytes]:
        """A request without a body (or a small one), its answer read whole. ``missing``:
        a 404 raises FileNotFoundError (otherwise it is an answer like any other)."""
        for attempt in (1, 2):
            token, _ = self.credentials()
            connection = self.connection()
            try:
                connection.request(method, self.path(*names, query=query),
                                   headers={**(headers or {}), "X-Auth-Token": token})
                answer = connection.getresponse()
                body = answer.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if attempt == 1 and _stale(exc):  # an idle connection the server closed
                    continue
                raise StoreUnavailable(f"Swift at {self.host}: {method} failed: "
                                       f"{_why(exc)}") from None
            self.release(connection)
            if answer.status == 401 and attempt == 1:
                self.forget_token(token)
                continue
            if answer.status == 404 and missing:
                raise FileNotFoundError(errno.ENOENT, "no such object in Swift", names[-1])
            if answer.status not in ok:
                raise refused(self.host, method, answer.status)
            return answer, body
        raise StoreUnavailable(f"Swift at {self.host} refused a fresh token (401)")

    def open_stream(self, method: str, names: tuple[str, ...],
                    headers: Mapping[str, str]) -> tuple[Connection, str]:
        """A new connection with a request's headers sent, for a body that follows in
        chunks (``Transfer-Encoding: chunked``); and the token it carries. Never an idle
        connection: one the server closed meanwhile would fail after part of the body."""
        token, _ = self.credentials()
        connection = self._connect(*self._storage_address())
        try:
            connection.putrequest(method, self.path(*names), skip_accept_encoding=True)
            for name, value in {**headers, "X-Auth-Token": token,
                                "Transfer-Encoding": "chunked"}.items():
                connection.putheader(name, value)
            connection.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise StoreUnavailable(f"Swift at {self.host}: {method} failed: "
                                   f"{_why(exc)}") from None
        return connection, token

    def _storage_address(self) -> tuple[str, str, int]:
        with self._lock:
            assert self._storage is not None
            scheme, host, port, _ = self._storage
        return scheme, host, port

    def stream_failed(self, token: str, status: int, method: str) -> StoreUnavailable:
        """What a streamed request's answer means when it is not a success."""
        if status == 401:
            self.forget_token(token)  # the next request logs in again
        return refused(self.host, method, status)


def refused(host: str, method: str, status: int) -> StoreUnavailable:
    if status == 507:
        return StoreUnavailable(errno.ENOSPC, f"Swift at {host} has no room left (507)")
    return StoreUnavailable(f"Swift at {host} answered {status} to {method}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _seconds(value: str | None) -> float | None:
    """A token's lifetime in seconds, as Swift gives it; None if it gives none."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _stale(exc: BaseException) -> bool:
    return isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError,
                            ConnectionResetError))


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
