"""What is in a message, part by part: the facts the policy decides on, and the parts the
transform seals, from one walk of the message model.

Nothing here trusts the message: a part whose header cannot be read still counts, with
what could be found out. Every leaf part counts, whatever its type (a delivery report,
a calendar invitation, a part with no type at all); only an empty multipart without
parts is nothing. Work is bounded: ``MAGIC_BYTES`` per part for libmagic, and
``MAX_TEXT`` characters of text in all for the content patterns (a text part beyond
what fits is sealed as a file rather than read as text).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import magic

from gateway.inspect.html import html_to_text
from gateway.message.address import parse_addresses
from gateway.message.model import Message
from gateway.message.params import decode_words, disposition, raw_file_name
from gateway.message.scan import Part
from gateway.types import AttachmentFacts, MessageFacts

MAGIC_BYTES = 64 * 1024
MAX_TEXT = 2 * 1024 * 1024

UNKNOWN_TYPE = "application/octet-stream"
# Parts that are attachments whatever their disposition says.
_ALWAYS_ATTACHED = frozenset({"application/ms-tnef", "text/calendar", "message/rfc822",
                              "message/global"})
_TEXT_TYPES = frozenset({"text/plain", "text/html"})


@dataclass(frozen=True)
class Leaf:
    """One part as Pli sees it: an attachment (a file for the vault) or body text.

    A forwarded message is one attachment (``part`` is the message/rfc822 part, its
    bytes the whole inner message); its own parts follow with ``enclosed`` set, so that
    their text still counts for the patterns. ``text`` is the decoded text of a
    text/plain or text/html part whose bytes are text, if it fitted in the text budget
    (``text_complete``). File names and texts are health data: never log them."""

    part: Part
    content_type: str
    filename: str | None
    attachment: bool
    true_type: str | None
    inline: bool
    depth: int
    text: str | None
    text_complete: bool
    content_id: str | None
    enclosed: bool
    size: int

    @property
    def encapsulated(self) -> bool:
        return self.part.kind == "message"


@dataclass(frozen=True)
class Inspection:
    facts: MessageFacts
    leaves: tuple[Leaf, ...]


def inspect(message: Message) -> Inspection:
    """Walk ``message`` once; never raises on what the message holds."""
    budget = _TextBudget()
    leaves = tuple(_walk(message, message.root, budget, enclosed=False))
    attachments = tuple(
        AttachmentFacts(filename=leaf.filename, declared_type=leaf.content_type,
                        true_type=leaf.true_type or UNKNOWN_TYPE, size=leaf.size,
                        inline=leaf.inline, depth=leaf.depth)
        for leaf in leaves if leaf.attachment and not leaf.enclosed)
    texts = [leaf.text if leaf.content_type != "text/html" else html_to_text(leaf.text)
             for leaf in leaves if leaf.text is not None]
    defects = sum(len(p.problems) for p in message.root.walk())
    facts = MessageFacts(header_from=header_from(message), subject=subject(message),
                         size=message.size, attachments=attachments,
                         text="\n".join(texts)[:MAX_TEXT], defects=defects)
    return Inspection(facts, leaves)


def inspect_bytes(data: bytes) -> MessageFacts:
    """The facts of a message in memory (tests, ``pli explain``)."""
    return inspect(Message.from_bytes(data)).facts


def _walk(message: Message, part: Part, budget: _TextBudget, *, enclosed: bool) -> Iterator[Leaf]:
    if part.kind == "multipart":
        for child in part.children:
            yield from _walk(message, child, budget, enclosed=enclosed)
        return
    if part.kind == "message":
        yield _leaf(message, part, budget, enclosed=enclosed, attachment=True,
                    kind="message/rfc822", filename=_filename(part))
        for child in part.children:
            yield from _walk(message, child, budget, enclosed=True)
        return
    content_type = part.content_type
    if content_type.startswith("multipart/") and _blank(message, part):
        return  # a multipart with no parts and nothing in it: not a document
    filename = _filename(part)
    attachment = (filename is not None or _disposition(part) == "attachment"
                  or content_type in _ALWAYS_ATTACHED or content_type not in _TEXT_TYPES)
    kind = true_type(message.first_bytes(part, MAGIC_BYTES)) if attachment else None
    yield _leaf(message, part, budget, enclosed=enclosed, attachment=attachment, kind=kind,
                filename=filename)


def _leaf(message: Message, part: Part, budget: _TextBudget, *, enclosed: bool,
          attachment: bool, kind: str | None, filename: str | None = None) -> Leaf:
    text: str | None = None
    complete = False
    if part.content_type in _TEXT_TYPES and (kind is None or kind.startswith("text/")):
        text, complete = budget.read(message, part)
    size = message.decoded_size(part) if attachment else 0
    return Leaf(part=part, content_type=part.content_type,
                filename=filename,
                attachment=attachment, true_type=kind,
                inline=_disposition(part) != "attachment", depth=part.depth, text=text,
                text_complete=complete, content_id=_content_id(part), enclosed=enclosed,
                size=size)


class _TextBudget:
    """Text read from the parts, at most ``MAX_TEXT`` characters in all."""

    def __init__(self) -> None:
        self.left = MAX_TEXT

    def read(self, message: Message, part: Part) -> tuple[str | None, bool]:
        if self.left <= 0:
            return None, False
        data = bytearray()
        complete = True
        for chunk in message.decoded(part):
            data += chunk
            if len(data) > self.left * 4:  # 4 bytes at most per character
                complete = False
                break
        text = _decode_text(part, bytes(data))
        if len(text) > self.left:
            text, complete = text[:self.left], False
        self.left -= len(text)
        return text, complete


def true_type(data: bytes) -> str:
    """The type libmagic sees in the first bytes of ``data``."""
    try:
        found = magic.from_buffer(data[:MAGIC_BYTES], mime=True)
    except Exception:
        return UNKNOWN_TYPE
    return found.lower() if isinstance(found, str) and "/" in found else UNKNOWN_TYPE


def _blank(message: Message, part: Part) -> bool:
    return part.end - part.body <= 4096 and not message.raw(part.body, part.end).strip()


def _decode_text(part: Part, data: bytes) -> str:
    charset = (part.params.get("charset") or "utf-8").strip().strip('"') or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except (LookupError, ValueError):  # unknown or bogus charset
        return data.decode("utf-8", errors="replace")


def _disposition(part: Part) -> str | None:
    return disposition(part.header.get("content-disposition"))[0]


def _filename(part: Part) -> str | None:
    """Content-Disposition's filename, else Content-Type's name (as mailers write both)."""
    kind = part.header.get("content-type")
    return (raw_file_name(part.header.get("content-disposition"), "filename")
            or (raw_file_name(kind, "name") if kind and "name" in kind.lower() else None))


def _content_id(part: Part) -> str | None:
    value = part.header.get("content-id")
    return value.strip().strip("<>") or None if value else None


def header_from(message: Message) -> tuple[str, ...]:
    """The addresses of every From: field, lower-cased; none if a field cannot be read
    (the From: check refuses such a message before the policy sees it)."""
    found: list[str] = []
    for value in message.header.get_all("from"):
        mailboxes = parse_addresses(value)
        if mailboxes:
            found.extend(m.address for m in mailboxes)
    return tuple(dict.fromkeys(a.strip().lower() for a in found if a.strip()))


def subject(message: Message) -> str:
    """The subject as a person reads it: encoded words decoded, white space folded."""
    value = message.header.get("subject")
    return " ".join(decode_words(value).split()) if value else ""
