"""A disk with a volatile write cache, whose power a test can cut at any moment.

Filesystem crash tests (xfstests, CrashMonkey) put the filesystem on device-mapper's
``dm-log-writes``: every write and every cache flush the filesystem sends is logged, and
the disk as it would be after a power cut at a given moment is rebuilt by replaying the
log up to that moment. This kernel has no device-mapper (``CONFIG_MD`` is off), so the
same log is kept here one level down: the block device is a loop device whose backing
file is served by this module over FUSE (``/dev/fuse``, spoken directly, no library), so
every write and every flush of the block device arrives here, in order.

The model is a disk with a write cache: a write is answered at once but only cached; a
flush (``REQ_PREFLUSH``, and the flush after a ``REQ_FUA`` write: the loop device turns
both into an ``fsync`` of its file) makes durable every write answered before it arrived.
The disk after a power cut holds exactly the writes some answered flush made durable,
nothing of the others: the harshest outcome a real disk may give, and the one a careful
program must survive. Flushes are answered ``flush_delay`` seconds after they arrive, as a
disk takes its time: a flush that a program sends only after telling its client that the
data is safe is then still unanswered when the client hears it, so a test that cuts the
power the moment it hears the client told finds the data missing, however fast the
machine is, as long as the client hears within ``flush_delay``.

ext4 goes on the loop device with the journal committed only when asked (``commit=600``)
and its inode tables written at ``mkfs`` time, so nothing reaches the disk by the clock
and whatever is durable is so because a program asked for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_IN = struct.Struct("<IIQQIIII")  # fuse_in_header
_OUT = struct.Struct("<IiQ")  # fuse_out_header
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr
_ENTRY = struct.Struct("<QQQQII")  # fuse_entry_out, before its fuse_attr
_ATTR_OUT = struct.Struct("<QII")  # fuse_attr_out, before its fuse_attr
_IO_IN = struct.Struct("<QQI")  # fh, offset, size: the start of fuse_read_in / fuse_write_in
_WRITE_IN_SIZE = 40

LOOKUP, FORGET, GETATTR, SETATTR, OPEN, READ, WRITE, STATFS, RELEASE = 1, 2, 3, 4, 14, 15, 16, 17, 18
FSYNC, FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR, ACCESS = 20, 25, 26, 27, 28, 29, 34
INTERRUPT, DESTROY, BATCH_FORGET, FALLOCATE = 36, 38, 42, 43
FUSE_BIG_WRITES, FUSE_MAX_PAGES = 1 << 5, 1 << 22
MAX_WRITE = 1024 * 1024
FILE_NAME = b"disk"
ROOT_INODE, FILE_INODE = 1, 2


@dataclass
class _Flush:
    covers: int  # writes answered before this flush arrived
    answered: bool = False


@dataclass
class CachedDisk:
    """The backing file's bytes as the block device sees them, and what is durable."""

    base: bytes
    flush_delay: float
    data: bytearray = field(init=False)
    writes: list[tuple[int, bytes]] = field(default_factory=list)
    flushes: list[_Flush] = field(default_factory=list)
    durable: int = 0  # writes made durable by the flushes answered so far
    history: list[int] = field(default_factory=list)  # each value ``durable`` has taken
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.data = bytearray(self.base)

    def write(self, offset: int, data: bytes) -> None:
        with self.lock:
            self.data[offset:offset + len(data)] = data
            self.writes.append((offset, data))

    def flush_arrived(self) -> _Flush:
        with self.lock:
            flush = _Flush(len(self.writes))
            self.flushes.append(flush)
            return flush

    def flush_answered(self, flush: _Flush) -> None:
        with self.lock:
            flush.answered = True
            if flush.covers > self.durable:
                self.durable = flush.covers
                self.history.append(self.durable)

    def mark(self) -> int:
        """The moment of a power cut: how many writes would be on the disk."""
        with self.lock:
            return self.durable

    def moments(self, since: int = 0) -> list[int]:
        """Every distinct disk a power cut after ``since`` could leave, in order."""
        with self.lock:
            return [m for m in self.history if m > since]

    def image(self, mark: int) -> bytearray:
        """The disk after a power cut at ``mark``."""
        with self.lock:
            writes = self.writes[:mark]
        image = bytearray(self.base)
        for offset, data in writes:
            image[offset:offset + len(data)] = data
        return image


class _FuseServer:
    """One file, ``disk``, in the root of a FUSE mount, served from a :class:`CachedDisk`."""

    def __init__(self, fd: int, disk: CachedDisk) -> None:
        self.fd = fd
        self.disk = disk
        self.thread = threading.Thread(target=self._serve, name="powercut-fuse", daemon=True)
        self.timers: list[threading.Timer] = []
        self.failure: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def _reply(self, unique: int, error: int = 0, payload: bytes = b"") -> None:
        try:
            os.write(self.fd, _OUT.pack(_OUT.size + len(payload), -error, unique) + payload)
        except OSError as exc:  # the request was interrupted, or the mount is gone
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                raise

    def _attr(self, inode: int) -> bytes:
        now = int(time.time())
        if inode == ROOT_INODE:
            size, mode, links = 0, stat.S_IFDIR | 0o700, 2
        else:
            size, mode, links = len(self.disk.data), stat.S_IFREG | 0o600, 1
        return _ATTR.pack(inode, size, (size + 511) // 512, now, now, now, 0, 0, 0, mode,
                          links, 0, 0, 0, 4096, 0)

    def _serve(self) -> None:
        try:
            while True:
                try:
                    request = os.read(self.fd, MAX_WRITE + 64 * 1024)
                except OSError as exc:
                    if exc.errno in (errno.ENODEV, errno.EBADF, errno.ECONNABORTED):  # unmounted
                        return
                    if exc.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                        continue
                    raise
                if not self._handle(request):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            self.failure = exc

    def _handle(self, request: bytes) -> bool:
        length, opcode, unique, inode, *_ = _IN.unpack_from(request)
        body = request[_IN.size:length]
        if opcode == INIT:
            _major, _minor, readahead, offered = struct.unpack_from("<IIII", body)
            flags = offered & (FUSE_BIG_WRITES | FUSE_MAX_PAGES)
            self._reply(unique, 0, struct.pack("<IIIIHHIIHHI7I", 7, 31, readahead, flags, 16,
                                               12, MAX_WRITE, 1, MAX_WRITE // 4096, 0, 0,
                                               *[0] * 7))
        elif opcode == LOOKUP:
            if inode == ROOT_INODE and body.rstrip(b"\0") == FILE_NAME:
                self._reply(unique, 0, _ENTRY.pack(FILE_INODE, 0, 60, 60, 0, 0) +
                            self._attr(FILE_INODE))
            else:
                self._reply(unique, errno.ENOENT)
        elif opcode in (GETATTR, SETATTR):  # a size change is not allowed: the disk is fixed
            self._reply(unique, 0, _ATTR_OUT.pack(60, 0, 0) + self._attr(inode))
        elif opcode in (OPEN, OPENDIR):
            self._reply(unique, 0, struct.pack("<QII", 0, 0, 0))
        elif opcode == READ:
            _fh, offset, size = _IO_IN.unpack_from(body)
            self._reply(unique, 0, bytes(self.disk.data[offset:offset + size]))
        elif opcode == WRITE:
            _fh, offset, size = _IO_IN.unpack_from(body)
            if offset + size > len(self.disk.data):
                self._reply(unique, errno.ENOSPC)
            else:
                self.disk.write(offset, body[_WRITE_IN_SIZE:_WRITE_IN_SIZE + size])
                self._reply(unique, 0, struct.pack("<II", size, 0))
        elif opcode == FSYNC:
            flush = self.disk.flush_arrived()
            timer = threading.Timer(self.disk.flush_delay, self._answer_flush, (unique, flush))
            timer.daemon = True
            self.timers.append(timer)
            timer.start()
        elif opcode in (RELEASE, RELEASEDIR, FLUSH, ACCESS):
            self._reply(unique)
        elif opcode == READDIR:
            self._reply(unique, 0, b"")
        elif opcode == STATFS:
            self._reply(unique, 0, struct.pack("<QQQQQIII7I", 0, 0, 0, 0, 0, 4096, 255, 4096,
                                               *[0] * 7))
        elif opcode in (FORGET, BATCH_FORGET, INTERRUPT):
            pass  # no reply
        elif opcode == DESTROY:
            self._reply(unique)
            return False
        elif opcode == FALLOCATE:
            self._reply(unique, errno.EOPNOTSUPP)
        else:
            self._reply(unique, errno.ENOSYS)
        return True

    def _answer_flush(self, unique: int, flush: _Flush) -> None:
        self.disk.flush_answered(flush)
        self._reply(unique)


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def _mount_fuse(folder: Path) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    ms_nosuid, ms_nodev = 2, 4
    if libc.mount(b"pli-powercut", str(folder).encode(), b"fuse", ms_nosuid | ms_nodev,
                  options) != 0:
        code = ctypes.get_errno()
        os.close(fd)
        raise OSError(code, f"mount -t fuse: {os.strerror(code)}")
    return fd


def unavailable() -> str | None:
    """Why this machine cannot host such a disk, or None."""
    if os.geteuid() != 0:
        return "a power-cut disk needs root (FUSE mount, loop device, ext4 mount)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if not os.path.isdir("/sys/fs/fuse/connections/") or not os.path.ismount(
            "/sys/fs/fuse/connections"):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"],
                       capture_output=True, check=False, timeout=30)
        if not os.path.ismount("/sys/fs/fuse/connections"):
            return "fusectl is not mounted (it lets a stuck FUSE disk be let go)"
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (e2fsprogs, util-linux, mount)"
    return None


class PowerCutDisk:
    """An ext4 filesystem at ``mount`` on a :class:`CachedDisk`."""

    def __init__(self, work: Path, disk: CachedDisk, server: _FuseServer, mount: Path,
                 loop_device: str) -> None:
        self.work = work
        self.disk = disk
        self.server = server
        self.mount = mount
        self.loop_device = loop_device

    def mark(self) -> int:
        return self.disk.mark()

    def moments(self, since: int = 0) -> list[int]:
        return self.disk.moments(since)

    def settle(self) -> None:
        """Make everything written so far durable (the set-up before the test proper)."""
        _run("sync", "-f", str(self.mount))

    @contextlib.contextmanager
    def after_power_cut(self, mark: int) -> Iterator[Path]:
        """The filesystem as it would come back after a power cut at ``mark`` (the journal
        replayed by mounting it), at a path of its own, on a copy of the disk."""
        image = self.work / f"cut-{mark}.img"
        image.write_bytes(self.disk.image(mark))
        where = self.work / f"cut-{mark}"
        where.mkdir()
        device = _run("losetup", "--find", "--show", str(image))
        try:
            _run("mount", "-t", "ext4", device, str(where))
            try:
                yield where
            finally:
                _run("umount", str(where))
        finally:
            _run("losetup", "--detach", device)
            image.unlink()
            where.rmdir()


@contextlib.contextmanager
def power_cut_disk(work: Path, *, size: int = 64 * 1024 * 1024, flush_delay: float = 0.1,
                   time_limit: float = 180) -> Iterator[PowerCutDisk]:
    """ext4 on a disk whose power a test cuts. Past ``time_limit`` seconds the disk stops
    answering (every access fails), so a test never hangs.

    Skips the test, with the reason, where the machine cannot host such a disk."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    image = work / "disk.img"
    with image.open("wb") as handle:
        handle.truncate(size)
    _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
    disk = CachedDisk(image.read_bytes(), flush_delay)
    image.unlink()
    served = work / "fuse"
    mount = work / "mnt"
    served.mkdir()
    mount.mkdir()
    try:
        fd = _mount_fuse(served)
    except OSError as exc:
        pytest.skip(f"cannot mount a FUSE filesystem here: {exc}")
    server = _FuseServer(fd, disk)
    server.start()
    connection = os.stat(served).st_dev  # answered by the server: FUSE's own device number
    abort = Path(f"/sys/fs/fuse/connections/{os.minor(connection)}/abort")

    def pull_the_plug() -> None:
        """Past ``time_limit`` every access fails, so that a test never hangs."""
        with contextlib.suppress(OSError):
            abort.write_text("1")
    watchdog = threading.Timer(time_limit, pull_the_plug)
    watchdog.daemon = True
    watchdog.start()
    try:
        device = _run("losetup", "--find", "--show", str(served / FILE_NAME.decode()))
        try:
            _run("mount", "-t", "ext4", "-o", "commit=600", device, str(mount))
            try:
                yield PowerCutDisk(work, disk, server, mount, device)
            finally:
                try:
                    _run("umount", str(mount))
                except OSError:  # still in use (a process the test could not stop)
                    _run("umount", "--lazy", str(mount))
        finally:
            _run("losetup", "--detach", device)
    finally:
        subprocess.run(["umount", "--lazy", str(served)], capture_output=True, check=False,
                       timeout=60)
        server.thread.join(10)
        if server.thread.is_alive():  # the loop device still holds the file: let it go
            pull_the_plug()
            server.thread.join(10)
        watchdog.cancel()
        for timer in server.timers:
            timer.cancel()
        os.close(fd)
    if server.failure is not None:
        raise server.failure
