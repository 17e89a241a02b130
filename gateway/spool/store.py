"""The spool: each queued message is one file, written completely before anyone says 250.

    spool/incoming/<id>     a message as the client sends it (DATA), until it is queued
    spool/queue/<id>        a queued message: the bytes to relay, then its envelope
    spool/state/<id>.json   what delivery learnt since (outcomes per recipient, retries)
    spool/hold/<id>         a queue file set aside: delivery failed on Pli's side (an
                            internal error) too often; kept for a person to look at and
                            release (as Postfix's hold queue, Mailman's shunt queue)
    spool/tmp/              queue and state files being written

A queue file holds the message, then its envelope (JSON), then a footer of fixed length
that gives both lengths. The envelope comes after the message because it is known only
once the policy has grouped the recipients, and so that a message passed as it came is
queued in the very file it was received in, without a byte copied. A queue file is
flushed (fdatasync), renamed into ``queue/`` and the folder fsync'd, that fsync shared by
the messages queued at the same moment (group commit: see ``commit.py``); only then
does the client get its 250. It never changes afterwards: what delivery learns goes into
the state file, written atomically beside it, which then stands for the envelope.

A queue file counts as queued; a held one is kept as it is but not delivered until it
is released; anything in ``incoming/`` or ``tmp/`` was never acknowledged and is removed
at start. Whoever changes a queued message (the worker,
``pli queue delete``) holds an exclusive ``flock`` on its queue file, so the command line
and the server never race. The spool's writes run on threads of its own, so that nothing
else waits behind an fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from gateway import diskfull
from gateway.logs import get_logger
from gateway.spool.commit import FolderSync, fsync_folder
from gateway.types import ByteRange, Segment

log = get_logger("pli.spool")

T = TypeVar("T")

RecipientState = Literal["pending", "sent", "failed"]

FOOTER = b"\nPLI-QUEUE-1 %016d %010d\n"
FOOTER_SIZE = len(FOOTER % (0, 0))
READ_CHUNK = 64 * 1024
IO_THREADS = 32
"""Threads for spool writes: each waits for its own file's flush, and the folder's fsync
is shared among them, so more threads at once means fewer fsyncs per message."""


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
    internal_errors: int = 0  # attempts in a row that failed on Pli's side (a bug, a bad file)
    held: str = ""  # why it was set aside in hold/, in words (never the message's content)
    waiting: str = ""  # the sending limit it waits for until next_attempt, in words

    @property
    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state == "pending"]

    @property
    def unreported(self) -> list[Recipient]:
        """Failed recipients whose DSN is still to be queued."""
        return [r for r in self.recipients if r.state == "failed" and not r.reported]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":")).encode()

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
        self.incoming_dir = root / "incoming"
        self.queue_dir = root / "queue"
        self.state_dir = root / "state"
        self.hold_dir = root / "hold"
        self.tmp_dir = root / "tmp"
        self.queue_sync = FolderSync(self.queue_dir)
        self._io: ThreadPoolExecutor | None = None
        # Outcomes the disk would not take (see finish), by queue id.
        self._unsaved: dict[str, QueuedMessage] = {}
        self._unsaved_lock = threading.Lock()
        # Envelopes this process queued, so that delivering a message just queued does
        # not read back what was just written (a state file, once written, wins).
        self._envelopes: dict[str, bytes] = {}
        # Messages removed while locked: closing the last descriptor of a removed file is
        # when the kernel frees it, which the spool's threads do instead of the caller.
        self._removed: set[str] = set()

    def create(self) -> None:
        for folder in (self.root, self.incoming_dir, self.queue_dir, self.state_dir,
                       self.hold_dir, self.tmp_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- the spool's own threads ----------------------------------------------------

    async def run(self, call: Callable[..., T], *args: object) -> T:
        """Run a blocking spool operation on the spool's threads."""
        return await self.submit(call, *args)

    def submit(self, call: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """The same, as a future (one step less through the event loop than a task)."""
        if self._io is None:
            self._io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="pli-spool")
        return asyncio.get_running_loop().run_in_executor(self._io, call, *args)

    def close(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None

    # -- writing --------------------------------------------------------------------

    def incoming(self, queue_id: str) -> Path:
        """Where the message ``queue_id`` is written while it is received."""
        return self.incoming_dir / queue_id

    def enqueue(self, message: QueuedMessage, body: bytes | Sequence[Segment],
                source: int | None = None) -> None:
        """Blocking: write the queue file from ``body`` (bytes, or segments whose byte
        ranges are copied from the file open as ``source``), flush it, rename it into
        the queue and make the name durable. Sets ``message.size``."""
        segments: Sequence[Segment] = (body,) if isinstance(body, bytes) else body
        tmp = self.tmp_dir / f"{message.id}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                message.size = _write_segments(fd, segments, source)
                _write_all(fd, _envelope(message))
                os.fdatasync(fd)
            finally:
                os.close(fd)
            _rename_new(tmp, self.queue_dir / message.id)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.queue_sync.sync()
        self._envelopes[message.id] = message.to_json()

    def adopt(self, message: QueuedMessage, received: Path) -> None:
        """Blocking: queue a message received in ``received`` (an intake file) as it is,
        by appending its envelope and moving the file into the queue. Sets
        ``message.size`` to the file's length before the envelope."""
        fd = os.open(received, os.O_WRONLY | os.O_APPEND)
        try:
            message.size = os.fstat(fd).st_size
            _write_all(fd, _envelope(message))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        _rename_new(received, self.queue_dir / message.id)
        self.queue_sync.sync()
        self._envelopes[message.id] = message.to_json()

    def save(self, message: QueuedMessage) -> None:
        """What delivery learnt (outcomes, the next try): atomically, in the state file."""
        tmp = self.tmp_dir / f"{message.id}.json.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                _write_all(fd, message.to_json())
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.state_dir / f"{message.id}.json")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_folder(self.state_dir)

    def remove(self, queue_id: str) -> None:
        """The queue file first (or the held one): once it is gone the message no longer
        counts as queued.

        Not fsync'd, as Postfix does not: a power cut right after a delivery may bring
        the message back, and it is delivered again (at least once, never lost)."""
        self._envelopes.pop(queue_id, None)
        self._removed.add(queue_id)
        with contextlib.suppress(FileNotFoundError):
            (self.queue_dir / queue_id).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.hold_dir / queue_id).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / f"{queue_id}.json").unlink()
        self.forget(queue_id)

    def finish(self, message: QueuedMessage) -> bool:
        """Blocking: write down what delivery learnt, or remove the message once nobody is
        left to serve or to tell. True if it was removed.

        What the disk does not take (a full disk) is kept in memory, and :meth:`load`
        gives it instead of the file until a later ``finish`` writes it, so that a
        recipient already served is not sent the message again and retries keep their
        pace; the OSError is raised all the same. Only a restart before then loses it."""
        done = not (message.pending or message.unreported)
        try:
            if done:
                self.remove(message.id)
            else:
                self.save(message)
        except OSError:
            with self._unsaved_lock:
                self._unsaved[message.id] = QueuedMessage.from_json(message.to_json())
            raise
        self.forget(message.id)
        return done

    def forget(self, queue_id: str) -> None:
        """Drop what is kept in memory about a message that is no longer queued."""
        with self._unsaved_lock:
            self._unsaved.pop(queue_id, None)

    def hold(self, message: QueuedMessage, reason: str) -> None:
        """Blocking, with the message locked: set it aside in ``hold/``, its state (and
        why) written first, so that it is never lost between the two folders."""
        message.held = reason
        self.save(message)
        os.rename(self.queue_dir / message.id, self.hold_dir / message.id)
        fsync_folder(self.hold_dir)
        self.queue_sync.sync()
        self.forget(message.id)

    def release(self, message: QueuedMessage) -> None:
        """Blocking, with the held message locked: back into the queue, due now, with its
        count of internal errors started afresh."""
        message.held = ""
        message.internal_errors = 0
        message.next_attempt = 0.0
        self.save(message)
        _rename_new(self.hold_dir / message.id, self.queue_dir / message.id)
        self.queue_sync.sync()
        fsync_folder(self.hold_dir)

    # -- reading --------------------------------------------------------------------

    def ids(self, *, held: bool = False) -> list[str]:
        """The queued messages' ids (or the held ones'), oldest first."""
        try:
            names = os.listdir(self.hold_dir if held else self.queue_dir)
        except FileNotFoundError:
            return []
        return sorted(names)

    def load(self, queue_id: str, *, held: bool = False) -> QueuedMessage | None:
        """The message's envelope as it stands: what :meth:`finish` could not write down,
        else its state file, else its queue file (in ``hold/`` if ``held``)."""
        with self._unsaved_lock:
            unsaved = self._unsaved.get(queue_id)
        if unsaved is not None and not held:
            return QueuedMessage.from_json(unsaved.to_json())
        try:
            return QueuedMessage.from_json((self.state_dir / f"{queue_id}.json").read_bytes())
        except FileNotFoundError:
            pass
        known = self._envelopes.get(queue_id)
        if known is not None and (self.queue_dir / queue_id).exists():
            return QueuedMessage.from_json(known)
        try:
            fd = os.open((self.hold_dir if held else self.queue_dir) / queue_id, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return _read_envelope(fd)[0]
        finally:
            os.close(fd)

    def open_message(self, queue_id: str) -> QueuedFile:
        """The bytes to relay, to read in a stream; close it when done."""
        fd = os.open(self.queue_dir / queue_id, os.O_RDONLY)
        try:
            return QueuedFile(fd, _read_envelope(fd)[1])
        except BaseException:
            os.close(fd)
            raise

    def content(self, queue_id: str) -> bytes:
        with self.open_message(queue_id) as queued:
            return queued.read(0, queued.size)

    def header_block(self, queue_id: str, limit: int = 1024 * 1024) -> bytes:
        """The message's header block (without the empty line after it)."""
        with self.open_message(queue_id) as queued:
            head = queued.read(0, min(queued.size, limit))
        if head.startswith(b"\r\n"):  # no field at all: the body begins at once
            return b""
        end = head.find(b"\r\n\r\n")
        return head[:end + 2] if end >= 0 else head

    def messages(self, *, held: bool = False) -> Iterator[QueuedMessage]:
        """Every queued message (or held one) whose envelope can be read. One that cannot
        (edited by hand, restored half-way) is logged and left where it is: it must not
        stop the scan that finds every other message due for delivery."""
        for queue_id in self.ids(held=held):
            try:
                message = self.load(queue_id, held=held)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.error("spool.unreadable", queue_id=queue_id, error=type(exc).__name__)
                continue
            if message is not None:
                yield message

    def recover(self) -> int:
        """At start: drop what was never acknowledged, and bring a spool written by an
        earlier Pli (msg/ and meta/) into this layout. Held messages stay held. Returns
        how many files went."""
        self.create()
        removed = 0
        for folder in (self.tmp_dir, self.incoming_dir):
            for leftover in folder.iterdir():
                leftover.unlink(missing_ok=True)
                removed += 1
        queued = set(self.ids()) | set(self.ids(held=True))
        for state in self.state_dir.glob("*.json"):
            if state.stem not in queued:
                state.unlink(missing_ok=True)
                removed += 1
        return removed + self._upgrade()

    def _upgrade(self) -> int:
        """Spools of Pli 0.1 kept a message as msg/<id>.eml and meta/<id>.json."""
        msg_dir, meta_dir = self.root / "msg", self.root / "meta"
        if not meta_dir.is_dir() and not msg_dir.is_dir():
            return 0
        removed = 0
        for meta in sorted(meta_dir.glob("*.json")) if meta_dir.is_dir() else ():
            eml = msg_dir / f"{meta.stem}.eml"
            try:
                message = QueuedMessage.from_json(meta.read_bytes())
                content = eml.read_bytes()
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.error("spool.unreadable", queue_id=meta.stem, error=type(exc).__name__)
                continue
            if not (self.queue_dir / message.id).exists():
                self.enqueue(message, content)
            meta.unlink()
            eml.unlink(missing_ok=True)
        for folder in (msg_dir, meta_dir):
            if folder.is_dir():
                for leftover in folder.iterdir():  # a message never acknowledged
                    leftover.unlink(missing_ok=True)
                    removed += 1
                folder.rmdir()
        return removed

    @contextlib.contextmanager
    def locked(self, queue_id: str, *, held: bool = False) -> Iterator[QueuedMessage | None]:
        """Hold the message exclusively; yields None when it is no longer queued (or, with
        ``held``, no longer held)."""
        path = (self.hold_dir if held else self.queue_dir) / queue_id
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
            # The message may have been removed (or moved) while we opened it.
            yield self.load(queue_id, held=held) if _same_file(fd, path) else None
        finally:
            removed = queue_id in self._removed
            self._removed.discard(queue_id)
            if not (removed and self._close_later(fd)):
                os.close(fd)

    def _close_later(self, fd: int) -> bool:
        """Have the spool's threads close ``fd`` (not waited for: nobody else can lock a
        removed message); False where there are none, or no longer."""
        if self._io is None:
            return False
        try:
            self._io.submit(os.close, fd)
        except RuntimeError:  # shut down
            return False
        return True


class QueuedFile:
    """A queued message's bytes (``[0, size)`` of its queue file), read with pread."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        parts: list[bytes] = []
        while start < end:
            data = os.pread(self.fd, end - start, start)
            if not data:
                raise OSError("a queue file is shorter than its footer says")
            parts.append(data)
            start += len(data)
        return b"".join(parts)

    def chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        for start in range(0, self.size, size):
            yield self.read(start, min(self.size, start + size))

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> QueuedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _envelope(message: QueuedMessage) -> bytes:
    data = message.to_json()
    return data + FOOTER % (message.size, len(data))


def _read_envelope(fd: int) -> tuple[QueuedMessage, int]:
    """The envelope and the message's length, from the footer at the file's end."""
    total = os.fstat(fd).st_size
    if total < FOOTER_SIZE:
        raise ValueError("not a queue file: too short")
    footer = os.pread(fd, FOOTER_SIZE, total - FOOTER_SIZE)
    try:
        magic, size_text, length_text = footer.split()
        size, length = int(size_text), int(length_text)
    except ValueError:
        raise ValueError("not a queue file: no footer") from None
    if magic != b"PLI-QUEUE-1" or size + length + FOOTER_SIZE != total:
        raise ValueError("not a queue file: its footer does not match its length")
    return QueuedMessage.from_json(os.pread(fd, length, size)), size


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_segments(fd: int, segments: Iterable[Segment], source: int | None) -> int:
    written = 0
    for segment in segments:
        if isinstance(segment, bytes):
            _write_all(fd, segment)
            written += len(segment)
        elif isinstance(segment, ByteRange):
            if source is None:
                raise ValueError("a byte range needs the message file it comes from")
            _copy_range(source, fd, segment.start, segment.end)
            written += segment.end - segment.start
        else:
            for chunk in segment():
                _write_all(fd, chunk)
                written += len(chunk)
    return written


def _copy_range(source: int, target: int, start: int, end: int) -> None:
    """Copy ``[start, end)`` of ``source`` to ``target``'s position, in the kernel where
    it can (copy_file_range), else through memory in 1 MiB steps."""
    position = start
    while position < end:
        try:
            copied = os.copy_file_range(source, target, end - position, position)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                 errno.EPERM):
                raise
            break
        if copied == 0:
            raise OSError("the message file is shorter than expected")
        position += copied
    while position < end:
        data = os.pread(source, min(end - position, 1024 * 1024), position)
        if not data:
            raise OSError("the message file is shorter than expected")
        _write_all(target, data)
        position += len(data)


def _rename_new(source: Path, target: Path) -> None:
    """A queue id is never reused: refuse to replace a queued message."""
    if target.exists():
        raise FileExistsError(f"{target.name} is already queued")
    os.rename(source, target)


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

