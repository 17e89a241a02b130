"""Walk a message's MIME tree and collect the facts the policy needs.

Nothing here trusts the message: every header and part is read defensively, so a malformed
message yields partial facts rather than an exception. Work is bounded: at most
``MAX_PARTS`` parts, ``MAX_DEPTH`` levels, ``MAGIC_BYTES`` per part for libmagic and
``MAX_TEXT`` characters of text for the content patterns.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.header import decode_header, make_header
from email.message import Message

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


def inspect_message(content: bytes) -> MessageFacts:
    """Parse ``content`` (a whole RFC 5322 message) into :class:`MessageFacts`; never raises."""
    try:
        message = email.message_from_bytes(content, policy=email.policy.default)
    except Exception:
        return MessageFacts(size=len(content))
    walker = _Walker()
    walker.walk(message, depth=0)
    return MessageFacts(
        header_from=_from_addresses(message),
        subject=_subject(message),
        size=len(content),
        attachments=tuple(walker.attachments),
        text=walker.text(),
        defects=walker.defects,
    )


class _Walker:
    def __init__(self) -> None:
        self.attachments: list[AttachmentFacts] = []
        self.defects = 0
        self._texts: list[str] = []
        self._text_len = 0
        self._parts = 0

    def text(self) -> str:
        return "\n".join(self._texts)

    def walk(self, part: Message, depth: int, *, text_only: bool = False) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS or depth > MAX_DEPTH:
            return
        self.defects += len(getattr(part, "defects", ()))
        content_type = _content_type(part)
        if part.is_multipart() and content_type != "message/rfc822":
            for child in _children(part):
                self.walk(child, depth + 1, text_only=text_only)
            return
        if content_type == "message/rfc822":
            inner = _children(part)
            if not text_only:
                data = b"".join(_message_bytes(m) for m in inner)
                # The parser found a message inside: that is its true type, whatever
                # libmagic would guess from the first header lines.
                kind = content_type if inner else None
                self._attach(part, content_type, data, depth, kind=kind)
            # An attached message is one attachment, but what it says still counts.
            for child in inner:
                self.walk(child, depth + 1, text_only=True)
            return
        filename = _filename(part)
        is_attachment = (
            filename is not None
            or _disposition(part) == "attachment"
            or content_type in _ALWAYS_ATTACHED
            or not content_type.startswith("text/")
        )
        data = _payload(part)
        kind = true_type(data) if is_attachment else None
        if is_attachment and not text_only:
            self._attach(part, content_type, data, depth, filename=filename, kind=kind)
        # A "text" attachment is read only if its bytes really are text.
        if content_type in _TEXT_TYPES and (kind is None or kind.startswith("text/")):
            self._add_text(part, content_type, data)

    def _attach(
        self,
        part: Message,
        content_type: str,
        data: bytes,
        depth: int,
        *,
        filename: str | None = None,
        kind: str | None = None,
    ) -> None:
        self.attachments.append(
            AttachmentFacts(
                filename=filename,
                declared_type=content_type,
                true_type=kind or true_type(data),
                size=len(data),
                inline=_disposition(part) != "attachment",
                depth=depth,
            )
        )

    def _add_text(self, part: Message, content_type: str, data: bytes) -> None:
        room = MAX_TEXT - self._text_len
        if room <= 0:
            return
        text = _decode_text(part, data)
        if content_type == "text/html":
            text = html_to_text(text)
        text = text[:room]
        self._texts.append(text)
        self._text_len += len(text)


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
