"""The spool: each queued message is two files written completely before anyone says 250.

    spool/msg/<id>.eml    the message as it will be relayed (never changed after writing)
    spool/meta/<id>.json  envelope and per-recipient state (rewritten after each attempt)
    spool/tmp/            files being written

A message counts as queued once its meta file exists: both files are written to ``tmp``,
fsync'd, renamed into place (message first) and the folders fsync'd. A message file
without a meta file is a submission that was never acknowledged, and is removed at start.
Whoever changes a queued message (the worker, ``pli queue delete``) holds an exclusive
``flock`` on its message file (which is never replaced, unlike the meta file), so the
command line and the server never race.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from gateway import diskfull
from gateway.logs import get_logger

log = get_logger("pli.spool")

RecipientState = Literal["pending", "sent", "failed"]


@dataclass
class Recipient:
    address: str
    state: RecipientState = "pending"
    reply: str = ""
    reported: bool = False  # a failure the sender has been told about (DSN queued)


@dataclass
class QueuedMessage:
    id: str
    mail_from: str
    recipients: list[Recipient]
    created: float
    size: int
    route_sender: str  # whose upstream account relays it (the sender; for a DSN, the original)
    smtputf8: bool = False
    kind: Literal["message", "dsn"] = "message"
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state == "pending"]

    @property
    def unreported(self) -> list[Recipient]:
        """Failed recipients whose DSN is still to be queued."""
        return [r for r in self.recipients if r.state == "failed" and not r.reported]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> QueuedMessage:
        raw = json.loads(data)
        raw["recipients"] = [Recipient(**r) for r in raw["recipients"]]
        return cls(**raw)


class Busy(Exception):
    """Another process holds the message (being delivered or deleted right now)."""


def new_queue_id() -> str:
    return f"{int(time.time() * 1000):011X}{secrets.token_hex(4).upper()}"


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.msg_dir = root / "msg"
        self.meta_dir = root / "meta"
        self.tmp_dir = root / "tmp"

    def create(self) -> None:
        for folder in (self.root, self.msg_dir, self.meta_dir, self.tmp_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- writing --------------------------------------------------------------------

    def enqueue(self, message: QueuedMessage, content: bytes) -> None:
        """Blocking: write, fsync and rename both files. Run it in a worker thread."""
        self._write_atomic(self.msg_dir / f"{message.id}.eml", content)
        try:
            self._write_atomic(self.meta_dir / f"{message.id}.json", message.to_json())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                (self.msg_dir / f"{message.id}.eml").unlink()
            raise

    def save(self, message: QueuedMessage) -> None:
        self._write_atomic(self.meta_dir / f"{message.id}.json", message.to_json())

    def remove(self, queue_id: str) -> None:
        """Meta first: once it is gone the message no longer counts as queued."""
        with contextlib.suppress(FileNotFoundError):
            (self.meta_dir / f"{queue_id}.json").unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.msg_dir / f"{queue_id}.eml").unlink()
        _fsync_dir(self.meta_dir)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = self.tmp_dir / f"{path.name}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed rename must not leave it behind either
            raise
        _fsync_dir(path.parent)

    # -- reading --------------------------------------------------------------------

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.meta_dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json"))

    def load(self, queue_id: str) -> QueuedMessage | None:
        try:
            return QueuedMessage.from_json((self.meta_dir / f"{queue_id}.json").read_bytes())
        except FileNotFoundError:
            return None

    def content(self, queue_id: str) -> bytes:
        return (self.msg_dir / f"{queue_id}.eml").read_bytes()

    def messages(self) -> Iterator[QueuedMessage]:
        """Every queued message whose envelope can be read. One that cannot (edited by
        hand, restored half-way) is logged and left where it is: it must not stop the
        scan that finds every other message due for delivery."""
        for queue_id in self.ids():
            try:
                message = self.load(queue_id)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.error("spool.unreadable", queue_id=queue_id, error=type(exc).__name__)
                continue
            if message is not None:
                yield message

    def recover(self) -> int:
        """At start: drop half-written files. Returns how many were removed."""
        self.create()
        removed = 0
        for tmp in self.tmp_dir.iterdir():
            tmp.unlink(missing_ok=True)
            removed += 1
        queued = set(self.ids())
        for eml in self.msg_dir.glob("*.eml"):
            if eml.stem not in queued:
                eml.unlink(missing_ok=True)
                removed += 1
        return removed

    @contextlib.contextmanager
    def locked(self, queue_id: str) -> Iterator[QueuedMessage | None]:
        """Hold the message exclusively; yields None when it is no longer queued."""
        path = self.msg_dir / f"{queue_id}.eml"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise Busy(queue_id) from None
                raise
            # The message may have been removed while we opened it.
            yield self.load(queue_id) if _same_file(fd, path) else None
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), path.stat()
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still put on the disk holding ``folder`` (or its
    nearest existing parent, for a folder not made yet)."""
    for candidate in (folder, *folder.parents):
        try:
            st = os.statvfs(candidate)
        except FileNotFoundError:
            continue
        return st.f_bavail * st.f_frsize
    raise FileNotFoundError(folder)


class DiskRoom:
    """Free space where messages are written (the spool, the vault), against the room a
    message of the largest allowed size needs: 1.5 times that size, Postfix's rule."""

    def __init__(self, folders: Sequence[Path], largest_message: int) -> None:
        self.folders = tuple(folders)
        self.need = largest_message * 3 // 2

    def free(self) -> int:
        """The least free space among the folders' disks; raises OSError if unreadable."""
        return min(free_bytes(folder) for folder in self.folders)

    def enough(self) -> bool:
        try:
            return self.free() >= self.need
        except OSError:  # the check itself failing must not stop the mail
            return True


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT, or SQLite's words for them (see ``gateway.diskfull``)."""
    return diskfull.is_disk_full(exc)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
