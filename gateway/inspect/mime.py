"""Walk a message's MIME tree and collect the facts the policy needs.

Nothing here trusts the message: every header and part is read defensively, so a malformed
message yields partial facts rather than an exception. Work is bounded: at most
``MAX_PARTS`` parts, ``MAX_DEPTH`` levels, ``MAGIC_BYTES`` per part for libmagic and
``MAX_TEXT`` characters of text for the content patterns.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import email.utils
from collections.abc import Iterator
from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from email.header import decode_header, make_header
from email.message import EmailMessage, Message

import magic

from gateway.inspect.html import html_to_text
from gateway.types import AttachmentFacts, MessageFacts

MAX_PARTS = 1000
MAX_DEPTH = 32
MAGIC_BYTES = 64 * 1024
MAX_TEXT = 2 * 1024 * 1024

UNKNOWN_TYPE = "application/octet-stream"
# Parts that are attachments whatever their disposition says.
_ALWAYS_ATTACHED = frozenset({"application/ms-tnef", "text/calendar", "message/rfc822"})
_TEXT_TYPES = frozenset({"text/plain", "text/html"})


FEED_CHUNK = 64 * 1024


class _ParseOncePolicy(email.policy.EmailPolicy):
    """The standard library's default policy, except that a header read again is not
    parsed again: the feed parser and the walk below read a part's Content-Type up to
    seven times, and parsing headers is most of what reading a small message costs.
    One instance per message, so nothing of one message is kept for the next."""

    def __init__(self) -> None:
        super().__init__(header_factory=email.policy.default.header_factory,
                         message_factory=EmailMessage)
        object.__setattr__(self, "_parsed", {})  # a policy is read-only once made

    def header_fetch_parse(self, name: str, value: str) -> str:
        if type(value) is not str:  # a header object set after parsing: returned as is
            same: str = super().header_fetch_parse(name, value)
            return same
        parsed: dict[tuple[str, str], str] = self.__dict__["_parsed"]
        header = parsed.get((name, value))
        if header is None:
            header = parsed[(name, value)] = super().header_fetch_parse(name, value)
        return header


def parse(content: bytes) -> Message | None:
    """The message as the email package sees it, or None when it cannot be parsed at all.

    Fed in chunks: ``message_from_bytes`` would first make two whole copies of the
    message as text (about 290 MB more at the peak for a 143 MB message)."""
    try:
        parser = BytesFeedParser(policy=_ParseOncePolicy())
        view = memoryview(content)
        for start in range(0, len(content), FEED_CHUNK):
            parser.feed(bytes(view[start:start + FEED_CHUNK]))
        message = parser.close()
    except Exception:
        return None
    return message if isinstance(message, Message) else None


def inspect_message(content: bytes) -> MessageFacts:
    """Parse ``content`` (a whole RFC 5322 message) into :class:`MessageFacts`; never raises."""
    return inspect_parsed(parse(content), len(content))


def inspect_parsed(message: Message | None, size: int) -> MessageFacts:
    """The facts of a message already parsed by :func:`parse` (parsing a large message
    costs more than everything else, so the pipeline parses once for inspection and
    for the transform)."""
    if message is None:
        return MessageFacts(size=size)
    walk = PartWalk()
    attachments: list[AttachmentFacts] = []
    texts = _TextBudget()
    for part in walk.parts(message):
        if part.attachment and not part.enclosed:
            attachments.append(
                AttachmentFacts(
                    filename=part.filename,
                    declared_type=part.content_type,
                    true_type=part.true_type or UNKNOWN_TYPE,
                    size=len(part.data),
                    inline=part.inline,
                    depth=part.depth,
                )
            )
        if part.text is not None:
            texts.add(part.text if part.content_type != "text/html" else html_to_text(part.text))
    return MessageFacts(
        header_from=_from_addresses(message),
        subject=_subject(message),
        size=size,
        attachments=tuple(attachments),
        text=texts.joined(),
        defects=walk.defects,
    )


@dataclass(frozen=True)
class Part:
    """One leaf of the MIME tree, decoded, with what Pli makes of it.

    ``attachment``: a part with a file name, an ``attachment`` disposition, a type that is
    always attached (TNEF, calendar, forwarded message) or a non-text type; a forwarded
    message (message/rfc822) is one attachment whose ``data`` is the whole inner message,
    and its own parts follow with ``enclosed`` set (their text still counts for patterns).
    ``text``: the decoded text of a text/plain or text/html part whose bytes are text.
    File names and texts are health data: keep them in memory, never log them.
    """

    content_type: str
    filename: str | None
    data: bytes
    attachment: bool
    true_type: str | None
    inline: bool
    depth: int
    text: str | None
    content_id: str | None
    enclosed: bool


class PartWalk:
    """Walks a parsed message, bounded by ``MAX_PARTS`` and ``MAX_DEPTH``; counts defects."""

    def __init__(self) -> None:
        self.defects = 0
        self._count = 0

    def parts(self, message: Message) -> Iterator[Part]:
        yield from self._walk(message, 0, enclosed=False)

    def _walk(self, part: Message, depth: int, *, enclosed: bool) -> Iterator[Part]:
        self._count += 1
        if self._count > MAX_PARTS or depth > MAX_DEPTH:
            return
        self.defects += len(getattr(part, "defects", ()))
        content_type = _content_type(part)
        if part.is_multipart() and content_type != "message/rfc822":
            for child in _children(part):
                yield from self._walk(child, depth + 1, enclosed=enclosed)
            return
        if content_type == "message/rfc822":
            inner = _children(part)
            data = b"".join(_message_bytes(m) for m in inner)
            # The parser found a message inside: that is its true type, whatever
            # libmagic would guess from the first header lines.
            yield self._part(part, content_type, data, depth, attachment=True,
                             kind=content_type if inner else true_type(data), text=None,
                             enclosed=enclosed, filename=_filename(part))
            # An attached message is one attachment, but what it says still counts.
            for child in inner:
                yield from self._walk(child, depth + 1, enclosed=True)
            return
        filename = _filename(part)
        is_attachment = (
            filename is not None
            or _disposition(part) == "attachment"
            or content_type in _ALWAYS_ATTACHED
            or content_type not in _TEXT_TYPES  # text/csv, text/x-vcard...: files too
        )
        data = _payload(part)
        kind = true_type(data) if is_attachment else None
        text = None
        # A "text" attachment is read only if its bytes really are text.
        if content_type in _TEXT_TYPES and (kind is None or kind.startswith("text/")):
            text = _decode_text(part, data)
        yield self._part(part, content_type, data, depth, attachment=is_attachment, kind=kind,
                         text=text, enclosed=enclosed, filename=filename)

    @staticmethod
    def _part(part: Message, content_type: str, data: bytes, depth: int, *, attachment: bool,
              kind: str | None, text: str | None, enclosed: bool,
              filename: str | None) -> Part:
        return Part(
            content_type=content_type, filename=filename, data=data, attachment=attachment,
            true_type=kind, inline=_disposition(part) != "attachment", depth=depth, text=text,
            content_id=_content_id(part), enclosed=enclosed,
        )


class _TextBudget:
    """Text for the content patterns, at most ``MAX_TEXT`` characters in all."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._len = 0

    def add(self, text: str) -> None:
        room = MAX_TEXT - self._len
        if room > 0:
            self._texts.append(text[:room])
            self._len += len(self._texts[-1])

    def joined(self) -> str:
        return "\n".join(self._texts)


def true_type(data: bytes) -> str:
    """The type libmagic sees in the first bytes of ``data``."""
    try:
        found = magic.from_buffer(data[:MAGIC_BYTES], mime=True)
    except Exception:
        return UNKNOWN_TYPE
    return found.lower() if isinstance(found, str) and "/" in found else UNKNOWN_TYPE


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _children(part: Message) -> list[Message]:
    try:
        payload = part.get_payload()
    except Exception:
        return []
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, Message):
        return [payload]
    return []


def _content_id(part: Message) -> str | None:
    try:
        value = part.get("content-id")
    except Exception:
        return None
    return str(value).strip().strip("<>") or None if value else None


def _disposition(part: Message) -> str | None:
    try:
        value = part.get_content_disposition()
    except Exception:
        return None
    return value.lower() if isinstance(value, str) else None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return str(name) if name else None


def _payload(part: Message) -> bytes:
    decoded = _base64_payload(part)
    if decoded is not None:
        return decoded
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    try:
        raw = part.get_payload()
    except Exception:
        return b""
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _base64_payload(part: Message) -> bytes | None:
    """A well-formed base64 part decoded straight from its text, or None.

    ``get_payload(decode=True)`` copies the text to bytes, splits it into lines and joins
    them again before decoding: about 4.5 times the part's size at the peak (600 MB for a
    100 MB scan). ``a2b_base64`` skips the line breaks itself and decodes in one pass. On
    anything it refuses (bad padding, 8-bit text), the email package decodes instead, with
    its own lenient rules."""
    try:
        if str(part.get("content-transfer-encoding", "")).strip().lower() != "base64":
            return None
        text = part.get_payload()
        if not isinstance(text, str):
            return None
        return binascii.a2b_base64(text)
    except Exception:  # binascii.Error, non-ASCII text, an unreadable header
        return None


def _message_bytes(message: Message) -> bytes:
    try:
        return message.as_bytes()
    except Exception:
        pass
    try:
        return message.as_string().encode("utf-8", "replace")
    except Exception:
        return b""


def _decode_text(part: Message, data: bytes) -> str:
    try:
        charset = part.get_content_charset() or "utf-8"
        return data.decode(charset, errors="replace")
    except Exception:  # unknown or bogus charset
        return data.decode("utf-8", errors="replace")


def _header_values(message: Message, name: str) -> list[str]:
    """Raw (undecoded) values of a header, without letting header parsing raise."""
    try:
        return [str(v) for k, v in message.raw_items() if k.lower() == name]
    except Exception:
        return []


def _from_addresses(message: Message) -> tuple[str, ...]:
    found: list[str] = []
    try:
        for header in message.get_all("from") or ():
            for address in getattr(header, "addresses", ()):
                if address.addr_spec and "@" in address.addr_spec:
                    found.append(address.addr_spec)
    except Exception:
        found = []
    if not found:
        raw = _header_values(message, "from")
        try:
            found = [addr for _, addr in email.utils.getaddresses(raw) if "@" in addr]
        except Exception:
            found = []
    return tuple(dict.fromkeys(a.strip().lower() for a in found if a.strip()))


def _subject(message: Message) -> str:
    try:
        value = message.get("subject")
        if value is not None:
            return " ".join(str(value).split())
    except Exception:
        pass
    raw = _header_values(message, "subject")
    if not raw:
        return ""
    try:
        return " ".join(str(make_header(decode_header(raw[0]))).split())
    except Exception:
        return " ".join(raw[0].split())
