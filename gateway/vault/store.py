"""The files object store (the default): sealed objects as files in the vault's folder,
written completely before anyone says 250.

    vault/objects/<link-id>/<object-id>   one sealed object (ciphertext only)
    vault/tmp/                            objects being written

An object is streamed into a file in ``tmp`` record by record, fsync'd, renamed into its
link's folder, and the folder fsync'd; a half-written object therefore never appears under
``objects``. Blocking throughout: callers on the event loop use a worker thread.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from gateway.vault.format import is_link_id, is_object_id
from gateway.vault.objects import READ_CHUNK, Removed

WRITE_BATCH = 1024 * 1024


class FileReader:
    """A sealed object's file, open for serving (a :class:`~gateway.vault.objects.
    CiphertextReader`)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close() / __exit__)
        self.size = os.fstat(self._file.fileno()).st_size

    def iter_range(
        self, start: int = 0, end: int | None = None, chunk_size: int = READ_CHUNK
    ) -> Iterator[bytes]:
        end = self.size if end is None else min(end, self.size)
        if not 0 <= start <= end:
            raise ValueError("invalid byte range")
        position = start
        while position < end:
            data = os.pread(self._file.fileno(), min(chunk_size, end - position), position)
            if not data:
                raise OSError("sealed object shrank while being read")
            position += len(data)
            yield data

    def read(self, size: int = -1, /) -> bytes:
        """Sequential reading, for opening the object with the format module."""
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileStore:
    """An :class:`~gateway.vault.objects.ObjectStore` on the local disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects_dir = root / "objects"
        self.tmp_dir = root / "tmp"

    def create(self) -> None:
        for folder in (self.root, self.objects_dir, self.tmp_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def link_dir(self, link_id: str) -> Path:
        if not is_link_id(link_id):
            raise ValueError("invalid link id")
        return self.objects_dir / link_id

    def object_path(self, link_id: str, object_id: str) -> Path:
        if not is_object_id(object_id):
            raise ValueError("invalid object id")
        return self.link_dir(link_id) / object_id

    # -- writing ----------------------------------------------------------------------

    def new_link(self, link_id: str) -> None:
        """Make the link's folder; a link id is never reused, so it must not exist yet."""
        self.link_dir(link_id).mkdir(mode=0o700)
        _fsync_dir(self.objects_dir)

    def write(self, link_id: str, object_id: str, blocks: Iterable[bytes]) -> int:
        """Stream ``blocks`` into the object's file atomically; return its size.

        The link's folder is fsync'd by :meth:`commit_link` once all objects are in."""
        final = self.object_path(link_id, object_id)
        tmp = self.tmp_dir / f"{link_id}.{object_id}.{secrets.token_hex(4)}"
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            batch: list[bytes] = []
            pending = 0
            for block in blocks:  # records gathered into one write of about 1 MiB
                batch.append(block)
                pending += len(block)
                if pending >= WRITE_BATCH:
                    size += _write_vector(fd, batch)
                    batch, pending = [], 0
            if batch:
                size += _write_vector(fd, batch)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            if final.exists():
                raise FileExistsError(f"object {object_id} already exists")
            os.rename(tmp, final)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return size

    def writer(self, link_id: str, object_id: str) -> FileWriter:
        """An object written piece by piece as it arrives (an upload), into ``tmp``;
        :meth:`FileWriter.commit` moves it into the link's folder, ``abort`` drops it."""
        return FileWriter(self.tmp_dir / f"{link_id}.{object_id}.{secrets.token_hex(4)}",
                            self.object_path(link_id, object_id))

    def commit_link(self, link_id: str) -> None:
        """Make every rename into the link's folder durable."""
        _fsync_dir(self.link_dir(link_id))

    def remove_link(self, link_id: str) -> Removed:
        """Delete a link's objects for good (no error if they are already gone)."""
        folder = self.link_dir(link_id)
        objects = size = 0
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return Removed()
        for entry in entries:
            size += entry.stat(follow_symlinks=False).st_size
            objects += 1
        shutil.rmtree(folder, ignore_errors=True)
        _fsync_dir(self.objects_dir)
        return Removed(objects, size)

    # -- reading ----------------------------------------------------------------------

    def open(self, link_id: str, object_id: str) -> FileReader:
        return FileReader(self.object_path(link_id, object_id))

    def link_ids(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.objects_dir) if is_link_id(n))
        except FileNotFoundError:
            return []

    def age(self, link_id: str, now: float | None = None) -> float:
        """Seconds since the link's folder last changed."""
        now = time.time() if now is None else now
        return now - self.link_dir(link_id).stat().st_mtime

    def connect(self) -> None:
        """Nothing to reach: the folders were made by :meth:`create`."""

    def close(self) -> None:
        """Files hold nothing open between calls."""

    def remove_stale_tmp(self, older_than: float, now: float | None = None) -> int:
        """Delete leftovers of writes that a crash interrupted."""
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


class FileWriter:
    """One object being received: appended to a file in ``tmp``, then flushed and renamed
    into its link's folder whole (the folder is fsync'd by ``commit_link``), or removed.
    Blocking: callers on the event loop use a worker thread."""

    def __init__(self, tmp: Path, final: Path) -> None:
        self.tmp = tmp
        self.final = final
        self.size = 0
        self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, data: bytes) -> None:
        try:
            self.size += _write_vector(self._fd, [data])
        except BaseException:
            self.abort()
            raise

    def commit(self) -> int:
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            if self.final.exists():
                raise FileExistsError(f"object {self.final.name} already exists")
            os.rename(self.tmp, self.final)
        except BaseException:
            self.abort()
            raise
        return self.size

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.tmp.unlink(missing_ok=True)


def _write_vector(fd: int, blocks: list[bytes]) -> int:
    """Write ``blocks`` in as few system calls as the kernel allows, copying none."""
    total = sum(len(b) for b in blocks)
    views = [memoryview(b) for b in blocks]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return total


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
