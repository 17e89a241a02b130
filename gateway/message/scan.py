"""The MIME structure of a message, as byte ranges found by scanning for boundaries.

No part is copied or decoded here: each :class:`Part` says where its header and body lie
in the message file, so that later steps read, decode or copy only what they need, in
streams. Boundaries are found the way the standard library's parser finds them (RFC
2046): a line that is ``--boundary``, optionally followed by ``--`` (the last one) and
white space; the line break before it belongs to it; a line that matches an enclosing
part's boundary ends the inner part too; several boundary lines in a row make no empty
parts; the preamble and epilogue are kept out of the parts. Work is bounded: at most
``MAX_PARTS`` parts and ``MAX_DEPTH`` levels; what lies beyond is one leaf, so nothing
is ever left out.

A forwarded message (message/rfc822 or message/global, not base64 or quoted-printable
encoded) is scanned inside. Every other type is a leaf, message/delivery-status and
message/rfc822-headers included: they are files, not structure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.message.header import MAX_HEADER_BYTES, HeaderBlock, parse_header
from gateway.message.params import content_type

MAX_PARTS = 1000
MAX_DEPTH = 32
_ENCAPSULATED = frozenset({"message/rfc822", "message/global"})
_IDENTITY = frozenset({"7bit", "8bit", "binary", ""})


class Source(Protocol):
    """The message's bytes, however they are held (a file read in windows, or bytes)."""

    @property
    def size(self) -> int: ...

    def read(self, start: int, end: int) -> bytes: ...

    def find(self, sub: bytes, start: int, end: int) -> int: ...


@dataclass
class Part:
    """One entity: header at ``[start, body)``, body at ``[body, end)``.

    ``kind`` is "multipart" (``children`` are its parts, the bytes between them being
    boundary lines, preamble and epilogue), "message" (one child: the forwarded
    message) or "leaf". ``problems`` are this part's own defects, in words."""

    start: int
    body: int
    end: int
    header: HeaderBlock
    content_type: str
    params: dict[str, str]
    cte: str
    depth: int
    kind: Literal["leaf", "multipart", "message"] = "leaf"
    children: list[Part] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def walk(self) -> Iterator[Part]:
        yield self
        for child in self.children:
            yield from child.walk()

    def leaves(self) -> Iterator[Part]:
        for part in self.walk():
            if part.kind == "leaf":
                yield part


class _Budget:
    def __init__(self) -> None:
        self.parts = 0


def scan(source: Source) -> Part:
    """The structure of the whole message in ``source``."""
    return _entity(source, 0, source.size, 0, "text/plain", _Budget())


def _entity(source: Source, start: int, end: int, depth: int, default: str,
            budget: _Budget) -> Part:
    budget.parts += 1
    data, truncated = _header_bytes(source, start, end)
    header = parse_header(data, top=depth == 0, truncated=truncated)
    body = min(end, start + header.length)
    kind, params = content_type(header.get("content-type"), default)
    cte = (header.get("content-transfer-encoding") or "").strip().lower()
    part = Part(start, body, end, header, kind, params, cte, depth,
                problems=list(header.problems))
    if depth >= MAX_DEPTH or budget.parts >= MAX_PARTS:
        return part  # what lies deeper stays whole, as one leaf
    if kind.startswith("multipart/"):
        boundary = params.get("boundary", "").rstrip()
        if boundary:
            _multipart(source, part, boundary.encode("utf-8", "surrogateescape"), budget)
        else:
            part.problems.append("a multipart without a boundary")
    elif kind in _ENCAPSULATED and cte in _IDENTITY:
        part.kind = "message"
        part.children.append(_entity(source, body, end, depth + 1, "text/plain", budget))
    return part


def _header_bytes(source: Source, start: int, end: int) -> tuple[bytes, bool]:
    """Enough of the entity to hold its header block: read in growing windows, as most
    are a few kilobytes but a part's header is read for each of hundreds of parts."""
    window = 8192
    while True:
        stop = min(end, start + window)
        data = source.read(start, stop)
        if stop == end or data.startswith(b"\r\n") or b"\r\n\r\n" in data:
            return data, False
        if window > MAX_HEADER_BYTES:
            return data, True
        window *= 4


def _multipart(source: Source, part: Part, boundary: bytes, budget: _Budget) -> None:
    delimiters = list(_delimiters(source, part.body, part.end, b"--" + boundary))
    # Before the first boundary line is the preamble; a last boundary ("--b--") before
    # any part means there are none, as when no boundary is found at all.
    if not delimiters or delimiters[0][2]:
        part.problems.append("no boundary line in a multipart")
        return
    child_default = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
    index = 0
    while index < len(delimiters):
        line_start, line_end, last = delimiters[index]
        if last:
            return
        # Several boundary lines in a row make no empty parts between them.
        while index + 1 < len(delimiters) and delimiters[index + 1][0] == line_end:
            index += 1
            line_end = delimiters[index][1]
        following = delimiters[index + 1][0] if index + 1 < len(delimiters) else None
        if following is not None:
            part_end = max(line_end, following - 2)  # its line break belongs to the boundary
        else:
            part_end = part.end
            if part_end == source.size and source.read(part_end - 2, part_end) == b"\r\n":
                part_end = max(line_end, part_end - 2)
            part.problems.append("no last boundary line in a multipart")
        if budget.parts >= MAX_PARTS:
            # Over the budget: the rest of this multipart is one leaf, read as it is.
            rest = _leaf(line_end, part.end if following is None else part_end, part.depth + 1)
            part.children.append(rest)
            part.kind = "multipart"
            return
        part.children.append(_entity(source, line_end, part_end, part.depth + 1,
                                     child_default, budget))
        part.kind = "multipart"
        index += 1


def _leaf(start: int, end: int, depth: int) -> Part:
    return Part(start, start, end, HeaderBlock(), "application/octet-stream", {}, "", depth,
                problems=["too many parts"])


def _delimiters(source: Source, start: int, end: int,
                delimiter: bytes) -> Iterator[tuple[int, int, bool]]:
    """``(line start, next line start, is the last)`` of every boundary line in
    ``[start, end)``, a line starting at ``start`` included."""
    if source.read(start, start + len(delimiter)) == delimiter:
        found = _delimiter_line(source, start, end, delimiter)
        if found is not None:
            yield found
    needle = b"\r\n" + delimiter
    position = start
    while True:
        hit = source.find(needle, position, end)
        if hit < 0:
            return
        found = _delimiter_line(source, hit + 2, end, delimiter)
        if found is not None:
            yield found
        position = hit + 2


def _delimiter_line(source: Source, line_start: int, end: int,
                    delimiter: bytes) -> tuple[int, int, bool] | None:
    after = line_start + len(delimiter)
    if after > end:
        return None
    tail = source.read(after, min(end, after + 256))
    last = tail.startswith(b"--")
    rest = tail[2:] if last else tail
    stripped = rest.lstrip(b" \t")
    if stripped.startswith(b"\r\n"):
        line_end = after + (len(tail) - len(stripped)) + 2
    elif not stripped and after + len(tail) >= end:
        line_end = end  # the region ends with this line, without a line break
    else:
        return None
    return line_start, line_end, last
