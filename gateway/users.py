"""The users file: who may submit through Pli, with which password and as which addresses.

Passwords are stored as scrypt hashes (stdlib ``hashlib.scrypt``); the file is TOML,
rewritten atomically by ``pli user``. The running server notices a changed file by its
modification time, so adding a user needs no restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.logs import get_logger
from gateway.policy.domains import is_one_of

log = get_logger("pli.users")

_N, _R, _P = 2**14, 8, 1
_DKLEN = 32
_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN, maxmem=_MAXMEM
    )
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p),
            dklen=len(expected), maxmem=_MAXMEM,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


# Verified against when the user does not exist, so an unknown name costs the same time.
_DUMMY_HASH = hash_password(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    addresses: tuple[str, ...]

    def may_send_as(self, address: str) -> bool:
        return is_one_of(address, self.addresses)


class UserStore:
    """Reads the users file, reloading it when it changes on disk.

    A successful login is remembered for ``CACHE_TTL`` seconds as an HMAC of the password
    under a key made at start and never written anywhere, so a mail client that opens a
    connection per message does not pay scrypt each time (Dovecot's auth cache works the
    same way). A wrong password, or a password changed in the file, always gets the full
    scrypt check."""

    CACHE_TTL = 900.0
    CACHE_MAX = 256

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}
        self._loaded = False
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[str, bytes, float]] = {}
        self._lock = threading.Lock()

    def users(self) -> dict[str, User]:
        """The users, read again whenever the file changes.

        The first read raises on a file that does not read (start-up stops with the
        reason). Later, a hand edit gone wrong keeps the last good users in force and is
        logged once: one typo must not stop the whole practice's mail."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or not self._loaded:
            try:
                users = load_users(self.path) if stamp else {}
            except ConfigError as exc:
                if not self._loaded:
                    raise
                self._stamp = stamp  # said once, not at every login
                log.error("users.reload_failed", problem=str(exc), kept="previous users")
                return self._users
            self._users, self._stamp, self._loaded = users, stamp, True
        return self._users

    def get(self, name: str) -> User | None:
        return self.users().get(name)

    def authenticate(self, name: str, password: str) -> User | None:
        """Blocking (scrypt takes tens of milliseconds): call it from a worker thread."""
        user = self.get(name)
        mac = hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()
        now = self._clock()
        if user is not None:
            with self._lock:
                entry = self._verified.get(name)
            if (entry is not None and entry[0] == user.password_hash and entry[2] > now
                    and hmac.compare_digest(entry[1], mac)):
                return user
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        if not (user and ok):
            return None
        with self._lock:
            if len(self._verified) >= self.CACHE_MAX:
                self._verified = {k: v for k, v in self._verified.items() if v[2] > now}
                if len(self._verified) >= self.CACHE_MAX:
                    self._verified.pop(next(iter(self._verified)))
            self._verified[name] = (user.password_hash, mac, now + self.CACHE_TTL)
        return user


def load_users(path: Path) -> dict[str, User]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the users file: {exc}") from None
    users: dict[str, User] = {}
    for name, entry in raw.get("users", {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
            raise ConfigError(f"{path}: user {name!r} has no password hash")
        addresses = entry.get("addresses", [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ConfigError(f"{path}: user {name!r}: addresses must be a list of strings")
        users[name] = User(name, entry["password"], tuple(a.lower() for a in addresses))
    return users


def save_users(path: Path, users: dict[str, User]) -> None:
    """Write the whole file atomically, readable by its owner only."""
    lines = ["# Managed by `pli user add|del`. Passwords are scrypt hashes.", ""]
    for user in sorted(users.values(), key=lambda u: u.name):
        lines.append(f"[users.{json.dumps(user.name)}]")
        lines.append(f"password = {json.dumps(user.password_hash)}")
        lines.append(f"addresses = {json.dumps(list(user.addresses))}")
        lines.append("")
    data = "\n".join(lines).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
