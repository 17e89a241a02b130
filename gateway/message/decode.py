"""Content-Transfer-Encodings undone as streams: a part's body is read in windows and
yielded decoded, so that no part is ever held whole (a 1 GB scan decodes in 1 MiB steps).

base64 (with pybase64, several times faster than the standard library's), quoted-
printable, uuencode, and the identity encodings (7bit, 8bit, binary, or none). Lenient as
the standard library is: base64 ignores characters outside its alphabet and adds missing
padding; quoted-printable leaves a broken escape as written.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterator
from typing import Protocol

import pybase64

WINDOW = 1024 * 1024

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(b for b in range(256) if b not in _ALPHABET + b"=")
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})


class Reader(Protocol):
    def read(self, start: int, end: int) -> bytes: ...


def decoded(source: Reader, start: int, end: int, cte: str) -> Iterator[bytes]:
    """The bytes of ``[start, end)`` with ``cte`` undone, in chunks of at most about
    :data:`WINDOW` bytes (never an empty chunk)."""
    if cte == "base64":
        yield from _base64(source, start, end)
    elif cte == "quoted-printable":
        yield from _by_lines(source, start, end, binascii.a2b_qp)
    elif cte in _UUENCODE:
        yield from _uuencoded(source, start, end)
    else:
        for position in range(start, end, WINDOW):
            chunk = source.read(position, min(end, position + WINDOW))
            if chunk:
                yield chunk


def decoded_size(source: Reader, start: int, end: int, cte: str) -> int:
    """What :func:`decoded` would yield in all."""
    return sum(len(chunk) for chunk in decoded(source, start, end, cte))


class _Base64:
    """base64 fed in pieces, read as the standard library reads it (characters outside
    the alphabet ignored, a ``=`` that completes no group ignored, missing padding
    added) except at one point: after padding, what follows is decoded as a run of its
    own instead of being dropped, so that no mail reader ever finds more in a part than
    the policy saw."""

    def __init__(self) -> None:
        self._group = b""  # characters of a group not yet complete
        self._padding = 0  # "=" seen after a group of two
        self._out: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        if not self._group and not self._padding and b"=" not in chunk:
            # Whole lines of a well-formed part: decoded in one call, the line breaks
            # skipped by the decoder itself. It refuses a count of characters that is
            # not a multiple of four; that chunk is read the careful way below.
            try:
                data = pybase64.b64decode(chunk, validate=False)
            except binascii.Error:
                pass
            else:
                return data
        text = chunk.translate(None, _NOT_BASE64)
        position = 0
        while True:
            equal = text.find(b"=", position)
            self._data(text[position:] if equal < 0 else text[position:equal])
            if equal < 0:
                break
            position = equal
            while position < len(text) and text[position] == 0x3D:
                position += 1
            self._pad(position - equal)
        out, self._out = self._out, []
        return b"".join(out)

    def close(self) -> bytes:
        group, self._group, self._padding = self._group, b"", 0
        if len(group) >= 2:  # missing padding, added as the standard library does
            self._emit(group + b"=" * (4 - len(group)))
        out, self._out = self._out, []
        return b"".join(out)

    def _data(self, data: bytes) -> None:
        if not data:
            return
        self._padding = 0  # a lone "=" followed by more data was no padding
        text = self._group + data
        usable = len(text) - len(text) % 4
        self._group = text[usable:]
        if usable:
            self._emit(text[:usable])

    def _pad(self, count: int) -> None:
        have = len(self._group)
        if have == 3 or (have == 2 and self._padding + count >= 2):
            self._emit(self._group + b"=" * (4 - have))
            self._group, self._padding = b"", 0
        elif have == 2:
            self._padding += count

    def _emit(self, text: bytes) -> None:
        self._out.append(pybase64.b64decode(text, validate=True))


def _base64(source: Reader, start: int, end: int) -> Iterator[bytes]:
    decoder = _Base64()
    for chunk in _by_lines(source, start, end, lambda lines: lines):
        data = decoder.feed(chunk)
        if data:
            yield data
    data = decoder.close()
    if data:
        yield data


def _by_lines(source: Reader, start: int, end: int,
              decode: Callable[[bytes], bytes]) -> Iterator[bytes]:
    """Windows cut after a line break, so that no escape or soft line break is split.
    A line longer than a window (no mailer writes one, anyone can) is cut anyway,
    before any ``=`` among its last two bytes, so memory stays bounded."""
    carry = b""
    for position in range(start, end, WINDOW):
        chunk = carry + source.read(position, min(end, position + WINDOW))
        if position + WINDOW >= end:
            cut = len(chunk)
        else:
            cut = chunk.rfind(b"\n") + 1
            if cut == 0 and len(chunk) >= WINDOW:  # one very long line
                tail = chunk[-2:]
                cut = len(chunk) - 2 + tail.index(b"=") if b"=" in tail else len(chunk)
        carry = chunk[cut:]
        data = decode(chunk[:cut]) if cut else b""
        if data:
            yield data
    if carry:
        data = decode(carry)
        if data:
            yield data


def _uuencoded(source: Reader, start: int, end: int) -> Iterator[bytes]:
    """Lines between ``begin`` and ``end``; lines that do not decode are skipped."""
    started = False
    partial = b""
    for block in _by_lines(source, start, end, lambda lines: lines):
        lines = (partial + block).split(b"\r\n")
        partial = lines.pop()  # a line the next block ends (or the last, unended one)
        out = bytearray()
        for line in lines:
            if not started:
                started = line.startswith(b"begin ")
                continue
            if line.strip() == b"end":
                if out:
                    yield bytes(out)
                return
            if line.strip() and line.strip() != b"`":
                try:
                    out += binascii.a2b_uu(line)
                except binascii.Error:
                    continue
        if out:
            yield bytes(out)
    if started and partial.strip() not in (b"", b"end", b"`"):
        try:
            yield binascii.a2b_uu(partial)
        except binascii.Error:
            pass
