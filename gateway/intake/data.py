"""The DATA phase, streamed: the message is written to a file as it arrives.

What the client sends is read in pieces of up to 64 KiB (never line by line), and each
piece is turned into the message as Pli keeps it before being written out:

- the end is ``CRLF . CRLF`` and nothing else: a ``.`` after a bare LF or a bare CR is
  content, never the end (the SMTP smuggling attacks of 2023 rely on the difference);
  it is searched for as one pattern, so a message is read in few pieces, however many
  of its lines end in a full stop;
- every line ends in CRLF: a bare CR or a bare LF becomes CRLF, so none goes further;
- the leading dot of a dot-stuffed line is removed (RFC 5321 §4.5.2);
- a NUL byte is noted: the message is refused after the final dot (550 5.6.0), as no
  mail client sends one and receivers read it in different ways;
- lines longer than 998 octets are accepted, as Postfix accepts them, and noted: the
  copy that leaves Pli never has one (see ``gateway.transform.passcopy``);
- past ``limit`` bytes the rest is read and thrown away, nothing of it kept, and the
  client gets 552 5.3.4 after the final dot.

:class:`DataReader` is the pure part (bytes in, bytes out, what it noticed);
:func:`receive` runs it on a stream and writes to the message file in 1 MiB steps.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

MAX_LINE = 998
FLUSH_BYTES = 1024 * 1024
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_END = b"\r\n.\r\n"


def normalise_line_endings(content: bytes) -> bytes:
    """Every line end a CRLF, as the intake writes a message (for a message read from a
    file, which a mail client may have saved with LF alone)."""
    if content.count(b"\n") == content.count(b"\r\n") == content.count(b"\r"):
        return content
    return _LINE_ENDINGS.sub(b"\r\n", content)


class DataReader:
    """Turns the bytes of a DATA transfer (the final dot excluded) into the message."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.size = 0  # bytes of the message as kept, counted even past the limit
        self.nul = False
        self.long_lines = False
        self.bare_line_ends = 0
        self._carry = b""  # a CR that may be the first half of a CRLF
        self._line_start = True
        self._line = 0  # length of the line being read so far

    @property
    def too_big(self) -> bool:
        return self.limit is not None and self.size > self.limit

    def feed(self, raw: bytes) -> bytes:
        """The message bytes ``raw`` stands for; empty once past the limit."""
        data = self._carry + raw
        if data.endswith(b"\r"):
            data, self._carry = data[:-1], b"\r"
        else:
            self._carry = b""
        return self._out(data)

    def close(self) -> bytes:
        data, self._carry = self._carry, b""
        return self._out(data)

    def _out(self, data: bytes) -> bytes:
        if not data:
            return b""
        lf = data.count(b"\n")
        cr = data.count(b"\r")
        if lf != cr or (lf and data.count(b"\r\n") != lf):
            self.bare_line_ends += 1
            data = _LINE_ENDINGS.sub(b"\r\n", data)
        line_start, self._line_start = self._line_start, data.endswith(b"\r\n")
        if line_start and data[:1] == b".":
            data = data[1:]
        if b"\r\n." in data:
            data = data.replace(b"\r\n.", b"\r\n")
        if not data:
            return b""
        if not self.nul and b"\0" in data:
            self.nul = True
        if not self.long_lines:
            self._measure(data)
        self.size += len(data)
        return b"" if self.too_big else data

    def _measure(self, data: bytes) -> None:
        first = data.find(b"\r\n")
        if first < 0:
            self._line += len(data)
        else:
            last = data.rfind(b"\r\n")
            inner = data[first + 2:last]
            if self._line + first > MAX_LINE or (
                    len(inner) > MAX_LINE
                    and max(map(len, inner.split(b"\r\n"))) > MAX_LINE):
                self.long_lines = True
            self._line = len(data) - last - 2
        if self._line > MAX_LINE:
            self.long_lines = True


@dataclass(frozen=True)
class Transfer:
    """What the DATA phase leaves: the reader's findings (the file is the caller's)."""

    size: int
    too_big: bool
    nul: bool
    long_lines: bool
    bare_line_ends: int


Write = Callable[[list[bytes]], Awaitable[None]]


class DataStream(asyncio.StreamReader):
    """The session's reader, able to tell what comes next without reading it.

    The end of DATA is searched for as one pattern, ``CRLF . CRLF``, in pieces of up to
    the reader's limit: never line by line. The one place that pattern cannot be found
    is a message that ends at once (the line end of the DATA command itself being the
    first CRLF): :meth:`starts_with` looks for that. It reads the reader's own buffer,
    which is why it lives in a subclass."""

    # asyncio.StreamReader's own state, which typeshed does not declare.
    _buffer: bytearray
    _eof: bool
    _wait_for_data: Callable[[str], Awaitable[None]]

    async def starts_with(self, prefix: bytes) -> bool:
        """Whether the bytes not read yet begin with ``prefix``; waits until enough have
        come to tell, or the stream ends."""
        while True:
            head = bytes(self._buffer[:len(prefix)])
            if not prefix.startswith(head):
                return False
            if len(head) == len(prefix):
                return True
            if self._eof:
                return False
            await self._wait_for_data("starts_with")


async def receive(stream: DataStream, reader: DataReader, write: Write,
                  on_progress: Callable[[], None] = lambda: None) -> Transfer:
    """Read DATA from ``stream`` up to the final dot, handing the message to ``write``
    in batches of about :data:`FLUSH_BYTES` (the last one at the end, possibly empty).
    A batch is being written while the next one is read, never two at once.

    If a write fails (a full disk), the rest is still read to the final dot, so that
    none of it is taken for commands, and the write's error is raised then.
    ``on_progress`` is called for each piece read (the session's idle timer)."""
    batch: list[bytes] = []
    pending = 0
    writing: asyncio.Future[None] | None = None
    failed: BaseException | None = None

    async def finish_write() -> None:
        nonlocal writing, failed
        if writing is not None:
            try:
                await writing
            except Exception as exc:
                failed = failed or exc
            writing = None

    try:
        empty = await stream.starts_with(b".\r\n")
        while True:
            if empty:
                await stream.readexactly(3)
                piece, last = b"", True
            else:
                # Pieces never end between the two CRLFs of "CRLF . CRLF": a piece
                # cut short leaves the last four bytes unread, so the whole pattern is
                # always in the reader's buffer when it is searched for.
                try:
                    piece = await stream.readuntil(_END)
                    last = True
                except asyncio.LimitOverrunError as exc:
                    piece = await stream.read(exc.consumed)
                    last = False
                piece = piece[:-3] if last else piece  # the CRLF before the dot is content
            on_progress()
            out = reader.feed(piece)
            if last:
                out += reader.close()
            if out and failed is None:
                batch.append(out)
                pending += len(out)
            if last or pending >= FLUSH_BYTES:
                await finish_write()
                if failed is None:
                    if last:
                        try:
                            await write(batch)
                        except Exception as exc:
                            failed = exc
                    else:
                        writing = asyncio.ensure_future(write(batch))
                batch, pending = [], 0
                if last:
                    break
    except BaseException:
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        raise
    if failed is not None:
        raise failed
    return Transfer(reader.size, reader.too_big, reader.nul, reader.long_lines,
                    reader.bare_line_ends)


class IncomingFile:
    """The file a message is written to as it arrives (in the spool's ``incoming/``).

    Made on the spool's threads (:meth:`begin`, as DATA starts: creating a file may wait
    for the filesystem's journal, busy with other messages' fsyncs, which the event loop
    must never do), or else on the first write; a batch of at most 64 KiB is written on
    the event loop (a whole small message: one write), a larger one on the spool's
    threads, so that a slow disk never holds up the other sessions. A large message is
    flushed to the disk every few megabytes while it arrives, so that what the disk must
    still write once the client has sent its final dot (when the vault's fsync waits for
    it, and the client for the 250) is a few megabytes, not the whole message."""

    INLINE = 64 * 1024
    FLUSH_EVERY = 8 * 1024 * 1024

    def __init__(self, path: Path, run: Callable[..., Awaitable[None]]) -> None:
        self.path = path
        self._run = run
        self._fd: int | None = None
        self._opening: asyncio.Future[int] | None = None
        self._unflushed = 0

    def begin(self, submit: Callable[[Callable[[], int]], asyncio.Future[int]]) -> None:
        """Have ``submit`` (the spool's threads) make the file while the client starts
        sending; the first write waits for it, and a failure is said there."""
        self._opening = submit(self._create)

    def _create(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    async def write(self, batch: list[bytes]) -> None:
        if self._opening is not None:
            # Shielded: if the session ends meanwhile, discard() closes what was made.
            self._fd = await asyncio.shield(self._opening)
            self._opening = None
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        if len(data) <= self.INLINE:
            self._write(data)
        else:
            await self._run(self._write, data)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = self._create()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._unflushed += len(data)
        if self._unflushed >= self.FLUSH_EVERY and len(data) > self.INLINE:
            os.fdatasync(self._fd)  # on the spool's threads: only larger batches flush
            self._unflushed = 0

    def close(self) -> None:
        """Done writing (an empty message still gets its empty file); receive() writes
        at least once, so the file is made by then."""
        assert self._opening is None
        if self._fd is None:
            self._write(b"")
        assert self._fd is not None
        os.close(self._fd)
        self._fd = -1

    def discard(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None:  # still being made, or made and never written to
            opening.add_done_callback(self._discard_made)
        elif self._fd is not None and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self.path.unlink(missing_ok=True)

    def _discard_made(self, opening: asyncio.Future[int]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            os.close(opening.result())
            self.path.unlink(missing_ok=True)
