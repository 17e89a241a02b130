"""The copy for recipients the policy passes: the original, less what only Pli should read.

Two things never go out, even to a colleague: Pli's own subject tags (``[code:4821]`` is
the code that guards the patients' link; ``[clair]`` is an instruction to Pli) and a
``Bcc:`` header (its addresses are for the envelope only, as any submission server
knows). Given the server's host name, a message without a ``Date:`` or a ``Message-ID:``
gets one at the end of its header, as a submission server may add them (RFC 6409,
section 8): RFC 5322 requires the date, and receiving servers distrust mail without
either (scanners and practice software sending by SMTP often leave them out). A byte-
order mark before the first field is dropped, and lines longer than 998 octets are
mended (``longlines``).

The copy is its header block, rewritten only if one of these applies, followed by the
original body as a byte range of the message file: nothing is re-serialised, and a
message that needs none of this is the whole file, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.header import Header
from email.utils import formatdate, make_msgid

from gateway.message.model import Message
from gateway.message.params import decode_words
from gateway.policy import remove_subject_tags
from gateway.transform.longlines import MAX_LINE, fold_field, header_bytes, mended_body
from gateway.types import ByteRange, Segment


def pass_copy(message: Message, tag_names: Iterable[str], hostname: str | None = None,
              *, long_lines: bool = True) -> tuple[Segment, ...]:
    """``long_lines`` False says the intake saw no line over 998 octets (saves a scan)."""
    header = message.header
    kept: list[bytes] = []
    changed = header.bom
    for field in header.fields:
        raw = field.raw
        if field.key == "bcc":
            changed = True
            continue
        if field.key == "subject":
            subject = " ".join(decode_words(field.value).split())
            cleaned = remove_subject_tags(subject, tag_names)
            if cleaned != subject:
                raw = _subject_field(cleaned)
                changed = True
        if len(raw) > MAX_LINE and fold_field(raw) != raw:
            changed = True
        kept.append(raw)
    if hostname is not None:
        if "date" not in header:
            kept.append(f"Date: {formatdate(localtime=True)}".encode("ascii"))
            changed = True
        if "message-id" not in header:
            kept.append(f"Message-ID: {make_msgid(domain=hostname)}".encode("ascii"))
            changed = True
    mended = mended_body(message) if long_lines else None
    body, encoding = mended if mended is not None else (None, None)
    if not changed and body is None:
        return (ByteRange(0, message.size),)
    if encoding is not None:
        kept = [raw for raw in kept
                if not raw.lower().startswith(b"content-transfer-encoding")]
        if "mime-version" not in header:
            kept.append(b"MIME-Version: 1.0")
    head = header_bytes(kept, encoding) + b"\r\n"
    if body is not None:
        return (head, *body)
    start = message.body_start
    return (head, ByteRange(start, message.size)) if start < message.size else (head,)


def _subject_field(text: str) -> bytes:
    if text.isascii():
        return f"Subject: {text}".encode("ascii")
    encoded = Header(text, "utf-8", header_name="Subject").encode(linesep="\r\n")
    return f"Subject: {encoded}".encode("ascii")
