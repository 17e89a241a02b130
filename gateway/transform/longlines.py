"""Lines longer than 998 octets (RFC 5321 §4.5.3.1.6) never leave Pli.

Pli accepts them, as Postfix does, since some practice software writes them; the copy it
relays is mended where the line is:

- a header field's line is folded at white space (a field with none is cut at 998
  octets, as Postfix cuts any line; no sane field is that long);
- a part's body is encoded anew: quoted-printable for text, base64 for anything else,
  the part's Content-Transfer-Encoding changed to say so, its content unchanged once
  decoded; every other part is copied by reference, byte for byte;
- the preamble or epilogue of a multipart, which no reader shows, is cut into lines.

A protected message needs none of this: it is sealed whole, and its notice is Pli's own.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator

from gateway.message.header import Field
from gateway.message.model import Message
from gateway.message.scan import Part
from gateway.types import ByteRange, Segment

MAX_LINE = 998
WINDOW = 1024 * 1024


def has_long_line(message: Message, start: int, end: int) -> bool:
    line = 0  # length of the line so far, across windows
    for position in range(start, end, WINDOW):
        data = message.raw(position, min(end, position + WINDOW))
        first = data.find(b"\r\n")
        if first < 0:
            line += len(data)
        else:
            if line + first > MAX_LINE:
                return True
            last = data.rfind(b"\r\n")
            inner = data[first + 2:last]
            if len(inner) > MAX_LINE and max(map(len, inner.split(b"\r\n"))) > MAX_LINE:
                return True
            line = len(data) - last - 2
        if line > MAX_LINE:
            return True
    return False


def fold_field(raw: bytes) -> bytes:
    """A header field with every line at most 998 octets."""
    lines = raw.split(b"\r\n")
    if all(len(line) <= MAX_LINE for line in lines):
        return raw
    out: list[bytes] = []
    for line in lines:
        while len(line) > MAX_LINE:
            cut = max(line.rfind(b" ", 1, MAX_LINE), line.rfind(b"\t", 1, MAX_LINE))
            if cut <= 0:
                cut = MAX_LINE - 1  # no white space: cut, and go on after a space
                out.append(line[:cut])
                line = b" " + line[cut:]
                continue
            out.append(line[:cut])
            line = line[cut:]  # the white space starts the continuation line
        out.append(line)
    return b"\r\n".join(out)


def mended_body(message: Message) -> tuple[tuple[Segment, ...], bytes | None] | None:
    """The message's body with every long line mended, and the Content-Transfer-Encoding
    its own header must then say (for a single-part message encoded anew; None to keep
    the original's); None when the body needs nothing."""
    root = message.root
    if not has_long_line(message, root.body, root.end):
        return None
    encoding = _encoding_for(root) if root.kind == "leaf" else None
    return tuple(_body(message, root, known_long=True)), encoding


def _encoding_for(part: Part) -> bytes:
    return b"quoted-printable" if part.content_type.startswith("text/") else b"base64"


def _body(message: Message, part: Part, known_long: bool = False) -> Iterator[Segment]:
    if not known_long and not has_long_line(message, part.body, part.end):
        if part.end > part.body:
            yield ByteRange(part.body, part.end)
        return
    if part.kind == "leaf":
        yield _encoded(message, part)
        return
    position = part.body
    for child in part.children:
        yield from _between(message, position, child.start)  # preamble, a boundary line
        yield from _entity(message, child)
        position = child.end
    yield from _between(message, position, part.end)  # the last boundary, the epilogue


def _entity(message: Message, part: Part) -> Iterator[Segment]:
    """A part: its header (folded, its encoding changed if its body is encoded anew),
    the empty line, its body."""
    encoding = (_encoding_for(part) if part.kind == "leaf"
                and has_long_line(message, part.body, part.end) else None)
    if part.header.length:
        yield header_bytes(part.header.fields, encoding) + b"\r\n"
    yield from _body(message, part)


def header_bytes(fields: tuple[Field, ...] | list[bytes], encoding: bytes | None) -> bytes:
    """Header fields (or their raw bytes) folded to 998 octets, Content-Transfer-Encoding
    replaced by ``encoding`` when given, each line ending in CRLF."""
    out: list[bytes] = []
    for field in fields:
        if isinstance(field, Field):
            if encoding is not None and field.key == "content-transfer-encoding":
                continue
            raw = field.raw
        else:
            raw = field
        out.append(fold_field(raw))
    if encoding is not None:
        out.append(b"Content-Transfer-Encoding: " + encoding)
    return b"".join(line + b"\r\n" for line in out)


def _between(message: Message, start: int, end: int) -> Iterator[Segment]:
    if end <= start:
        return
    if not has_long_line(message, start, end):
        yield ByteRange(start, end)
        return
    data = message.raw(start, end)  # a preamble or epilogue: small, and never shown
    yield b"\r\n".join(fold_field(line) if len(line) > MAX_LINE else line
                       for line in data.split(b"\r\n"))


def _encoded(message: Message, part: Part) -> Callable[[], Iterator[bytes]]:
    text = part.content_type.startswith("text/")

    def chunks() -> Iterator[bytes]:
        carry = b""
        for chunk in message.decoded(part):
            data = carry + chunk
            if text:
                cut = data.rfind(b"\n") + 1 or len(data)  # whole lines where there are any
                piece, carry = data[:cut], data[cut:]
                if piece:
                    yield _qp(piece)
            else:
                usable = len(data) - len(data) % 57
                piece, carry = data[:usable], data[usable:]
                if piece:
                    yield base64.encodebytes(piece).replace(b"\n", b"\r\n")
        if carry:
            if text:
                yield _qp(carry)
            else:
                yield base64.encodebytes(carry).replace(b"\n", b"\r\n")
    return chunks


def _qp(data: bytes) -> bytes:
    """Quoted-printable, every line break (hard or soft) a CRLF."""
    return binascii.b2a_qp(data, istext=True).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
