"""The copy for recipients the policy passes: the original, less what only Pli should read.

Two things never go out, even to a colleague: Pli's own subject tags (``[code:4821]`` is
the code that guards the patients' link; ``[clair]`` is an instruction to Pli) and a
``Bcc:`` header (its addresses are for the envelope only, as any submission server
knows). Given the server's host name, a message without a ``Date:`` or a ``Message-ID:``
gets one at the end of its header, as a submission server may add them (RFC 6409,
section 8): RFC 5322 requires the date, and receiving servers distrust mail without
either (scanners and practice software sending by SMTP often leave them out).
Everything else is left byte for byte; a message that needs none of this comes back as
is.
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterable
from email.header import Header
from email.utils import formatdate, make_msgid

from gateway.policy import remove_subject_tags


def pass_copy(content: bytes, tag_names: Iterable[str], hostname: str | None = None) -> bytes:
    head, sep, body = content.partition(b"\r\n\r\n")
    if not sep:  # header fields only, no body: RFC 5322 allows it
        head, body = content.removesuffix(b"\r\n"), b""
    fields = _fields(head)
    kept: list[bytes] = []
    changed = False
    for name, raw in fields:
        lowered = name.lower()
        if lowered == "bcc":
            changed = True
            continue
        if lowered == "subject":
            value = raw.split(b":", 1)[1].decode("utf-8", "surrogateescape")
            try:
                subject = str(email.policy.default.header_factory("subject", value.strip()))
            except Exception:
                subject = value
            cleaned = remove_subject_tags(subject, tag_names)
            if cleaned != " ".join(subject.split()):
                raw = _subject_field(cleaned)
                changed = True
        kept.append(raw)
    if hostname is not None:
        present = {name.lower() for name, _ in fields}
        if "date" not in present:
            kept.append(f"Date: {formatdate(localtime=True)}".encode("ascii"))
            changed = True
        if "message-id" not in present:
            kept.append(f"Message-ID: {make_msgid(domain=hostname)}".encode("ascii"))
            changed = True
    if not changed:
        return content
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def _subject_field(text: str) -> bytes:
    if text.isascii():
        return f"Subject: {text}".encode("ascii")
    encoded = Header(text, "utf-8", header_name="Subject").encode(linesep="\r\n")
    return f"Subject: {encoded}".encode("ascii")


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """Header fields with their continuation lines, as raw bytes, in order."""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + b"\r\n" + line)
        else:
            name = line.split(b":", 1)[0].decode("ascii", "replace").strip()
            fields.append((name, line))
    return fields
