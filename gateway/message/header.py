"""A header block (of a message or of a MIME part), read once from its bytes.

Tolerant in what it reads, so that nothing a receiver would see as a field goes unread:
field names with white space before the colon (``From : <x@y>``), folded lines, raw UTF-8
(SMTPUTF8), a byte-order mark before the first field. Every oddity that receivers could
read two ways is noted in ``problems`` (in words, without the field's value), and the
header block of a submitted message with any of them is refused, never passed:

- a line inside the block that is neither a field nor a continuation line (a receiver
  may end the header there, or skip the line and read the fields after it);
- a line of white space only (some readers end the header there);
- a field whose name is followed by white space before the colon, for the fields that
  decide anything (From, Subject, Content-Type...: one reader sees them, another not);
- two fields of a kind a message has at most once (two From fields: which one is shown?).

The block ends at the first empty line; what follows is the body. Lines end in CRLF
(the intake writes nothing else).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BOM = b"\xef\xbb\xbf"

MAX_HEADER_BYTES = 1024 * 1024
"""A header block longer than this is not read further (the message is refused):
Postfix keeps at most 100 KB of it; a real one is a few KB."""

_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")

SINGLE = frozenset({"from", "sender", "reply-to", "subject", "date", "message-id",
                    "mime-version", "content-type", "content-transfer-encoding",
                    "content-disposition"})
"""Fields a message or part has at most once (RFC 5322 §3.6, RFC 2045), whose second
copy would make what receivers show depend on which copy they read."""

DECIDING = SINGLE | {"to", "cc", "bcc", "resent-from", "resent-sender"}
"""Fields whose name must be written exactly (no white space before the colon)."""


@dataclass(frozen=True)
class Field:
    """One header field: its name as written (white space before the colon dropped)
    and its raw bytes, continuation lines included, without the final CRLF."""

    name: str
    raw: bytes
    colon: int  # offset of the colon in ``raw``
    spaced: bool = False  # white space between the name and the colon
    key: str = ""  # the name lower-cased

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name.lower())

    @property
    def value_bytes(self) -> bytes:
        """The value, unfolded (a CRLF before white space removed), not stripped."""
        return self.raw[self.colon + 1:].replace(b"\r\n", b"")

    @property
    def value(self) -> str:
        """The value as text: unfolded, stripped, raw UTF-8 decoded (an invalid byte
        becomes U+FFFD, so it can never match an address or a tag)."""
        return self.value_bytes.decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class HeaderBlock:
    """The fields in order; ``length`` is the number of bytes the block takes, its
    ending empty line included (0 for an entity that starts with its body)."""

    fields: tuple[Field, ...] = ()
    length: int = 0
    problems: tuple[str, ...] = ()
    bom: bool = False
    _index: dict[str, list[Field]] = field(default_factory=dict, init=False, repr=False,
                                           compare=False)

    def __post_init__(self) -> None:
        for one in self.fields:
            self._index.setdefault(one.key, []).append(one)

    def first(self, name: str) -> Field | None:
        found = self._index.get(name.lower())
        return found[0] if found else None

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.first(name)
        return found.value if found is not None else default

    def get_all(self, name: str) -> list[str]:
        return [f.value for f in self._index.get(name.lower(), ())]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index


def parse_header(data: bytes, *, top: bool = False, truncated: bool = False) -> HeaderBlock:
    """Read the header block at the start of ``data`` (an entity: header, empty line,
    body). ``top`` is for a message's own header, where a byte-order mark may come
    first; a part's header never has one. ``truncated`` says that ``data`` is only the
    first bytes of a longer entity (the caller reads at most :data:`MAX_HEADER_BYTES`
    and a little more). A line that is not a field ends the block there (as the
    standard library's parser reads it) and is noted as a problem; so is a block that
    does not end within :data:`MAX_HEADER_BYTES`."""
    start = len(BOM) if top and data.startswith(BOM) else 0
    fields: list[Field] = []
    problems: list[str] = []
    lines: list[bytes] = []  # the lines of the field being read
    name, colon, spaced = "", 0, False
    position, size = start, len(data)
    while position < size:
        if position - start > MAX_HEADER_BYTES:
            problems.append(f"a header longer than {MAX_HEADER_BYTES} bytes")
            break
        end = data.find(b"\r\n", position)
        if end < 0:
            if truncated:
                problems.append(f"a header longer than {MAX_HEADER_BYTES} bytes")
                break
            end = size  # the last line of a message of header fields only
        line, after = data[position:end], min(end + 2, size)
        if not line:  # the empty line: the body starts after it
            position = after
            break
        if line[0] in b" \t":
            if not line.strip(b" \t"):
                problems.append("a line of white space only inside the header")
            if lines:
                lines.append(line)
            else:
                problems.append("a continuation line before any field")
            position = after
            continue
        found = line.find(b":")
        written = line[:found].rstrip(b" \t") if found > 0 else b""
        if not _NAME.fullmatch(written):
            problems.append("a line that is not a header field inside the header")
            break  # the body starts at this line, as the standard library reads it
        if lines:
            fields.append(Field(name, b"\r\n".join(lines), colon, spaced))
        lines, name, colon = [line], written.decode("ascii"), found
        spaced = len(written) != found
        position = after
    if lines:
        fields.append(Field(name, b"\r\n".join(lines), colon, spaced))
    problems.extend(_duplicates_and_spacing(fields))
    return HeaderBlock(tuple(fields), position, tuple(dict.fromkeys(problems)), start > 0)


def _duplicates_and_spacing(fields: list[Field]) -> list[str]:
    problems = []
    seen: set[str] = set()
    for one in fields:
        key = one.key
        if key in SINGLE:
            if key in seen:
                problems.append(f"two {one.name} fields")
            seen.add(key)
        if one.spaced and key in DECIDING:
            problems.append(f"white space between the name {one.name} and its colon")
    return problems
