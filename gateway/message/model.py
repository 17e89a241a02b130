"""The one model of a message: its file on disk, its header block and its MIME structure.

Every step after the intake reads the message through this (the From: check, the
policy's facts, the notice, the copy for passed recipients, the vault, the bounce): it is
read once, by one parser, so no two steps can disagree about what it says. A small
message is held in memory (one read); a large one is read in windows, so memory does
not grow with its size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from gateway.message.decode import decoded, decoded_size
from gateway.message.header import HeaderBlock
from gateway.message.scan import Part, scan

SMALL = 256 * 1024
"""Messages up to this size are read into memory in one go."""

WINDOW = 1024 * 1024


class BytesSource:
    """A message already in memory (``pli explain``, tests)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        return self.data[start:end]

    def find(self, sub: bytes, start: int, end: int) -> int:
        return self.data.find(sub, start, end)


class FileSource:
    """A message file, read with ``pread``: whole when small, else in windows."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self._size = size
        self._data = _pread(fd, 0, size) if size <= SMALL else None

    @property
    def size(self) -> int:
        return self._size

    def read(self, start: int, end: int) -> bytes:
        end = min(end, self._size)
        if start >= end:
            return b""
        if self._data is not None:
            return self._data[start:end]
        return _pread(self.fd, start, end)

    def find(self, sub: bytes, start: int, end: int) -> int:
        end = min(end, self._size)
        if self._data is not None:
            return self._data.find(sub, start, end)
        overlap = len(sub) - 1
        position = start
        while position < end:
            stop = min(end, position + WINDOW + overlap)
            hit = _pread(self.fd, position, stop).find(sub)
            if hit >= 0:
                return position + hit
            if stop == end:
                return -1
            position += WINDOW
        return -1


def _pread(fd: int, start: int, end: int) -> bytes:
    data = os.pread(fd, end - start, start)
    if len(data) == end - start:
        return data
    parts = [data]
    got = len(data)
    while got < end - start:  # a short read (rare, on some file systems)
        more = os.pread(fd, end - start - got, start + got)
        if not more:
            raise OSError("the message file is shorter than expected")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class Message:
    """A message and its structure. ``path`` and ``fd`` are set for a message on disk
    (the spool copies byte ranges from ``fd``); close it when done."""

    def __init__(self, source: BytesSource | FileSource, path: Path | None = None) -> None:
        self.source = source
        self.path = path
        self.root: Part = scan(source)

    @classmethod
    def open(cls, path: Path) -> Message:
        fd = os.open(path, os.O_RDONLY)
        try:
            return cls(FileSource(fd, os.fstat(fd).st_size), path)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        return cls(BytesSource(data))

    @property
    def fd(self) -> int | None:
        return self.source.fd if isinstance(self.source, FileSource) else None

    @property
    def size(self) -> int:
        return self.source.size

    @property
    def header(self) -> HeaderBlock:
        return self.root.header

    @property
    def body_start(self) -> int:
        return self.root.body

    def raw(self, start: int = 0, end: int | None = None) -> bytes:
        return self.source.read(start, self.size if end is None else end)

    def header_bytes(self) -> bytes:
        """The header block as written, its ending empty line excluded."""
        data = self.raw(0, self.root.body)
        return data[:-2] if data.endswith(b"\r\n\r\n") else data

    def decoded(self, part: Part) -> Iterator[bytes]:
        return decoded(self.source, part.body, part.end, part.cte)

    def decoded_size(self, part: Part) -> int:
        return decoded_size(self.source, part.body, part.end, part.cte)

    def first_bytes(self, part: Part, count: int) -> bytes:
        """The first ``count`` decoded bytes of a part (for libmagic)."""
        out = bytearray()
        for chunk in decoded(self.source, part.body, min(part.end, part.body + count * 3 + 4096),
                             part.cte):
            out += chunk
            if len(out) >= count:
                break
        return bytes(out[:count])

    def close(self) -> None:
        fd = self.fd
        if fd is not None:
            os.close(fd)
            self.source = BytesSource(b"")

    def __enter__(self) -> Message:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
