"""Build the emails Pli sends in place of a protected message: the notice and the receipt.

Only the headers that carry no content are kept from the original (From, To, Cc, Reply-To,
Date, In-Reply-To, References), so threading works; everything else (Subject,
Thread-Topic, Thread-Index, Keywords, Comments, X- headers...) is left behind by
construction. Every header value is checked for line breaks before it is written.

A notice is small and made whole in memory, except the attachments a rule keeps in it:
each is encoded anew in base64 as the notice is written to the spool, from the original
message's file, so a kept 100 MB scan is never held in memory.
"""

from __future__ import annotations

import base64
import email.policy
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from gateway.errors import MessageRejected, bilingual
from gateway.message.header import HeaderBlock
from gateway.transform.extract import File
from gateway.types import Segment

KEPT_HEADERS = ("From", "To", "Cc", "Reply-To", "Date", "In-Reply-To", "References")

POLICY = email.policy.SMTP.clone(max_line_length=78)
_LINE = 57  # bytes per base64 line: 76 characters


def safe(value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise MessageRejected(bilingual(
            "Un en-tête du message contient un saut de ligne : il ne peut pas être protégé "
            "tel quel", "A header of the message contains a line break; it cannot be "
            "protected as it is"))
    return value


@dataclass(frozen=True)
class KeptContent:
    """What a protect rule chose to leave in the email (body "keep", attachments "keep")."""

    text: str = ""
    html: str = ""
    files: tuple[File, ...] = ()
    inline_images: tuple[File, ...] = ()


def notice(original: HeaderBlock | None, *, subject: str, text: str, html: str,
           hostname: str, kept: KeptContent | None = None,
           addresses: tuple[str, tuple[str, ...]] | None = None) -> tuple[Segment, ...]:
    """``addresses``: From and To for a notice that answers no message (one the sender
    wrote on the portal's page), in place of the original's headers."""
    message = EmailMessage(policy=POLICY)
    if addresses is not None:
        message["From"] = safe(addresses[0])
        message["To"] = ", ".join(safe(a) for a in addresses[1])
    if original is not None:
        for name in KEPT_HEADERS:
            for value in original.get_all(name):
                if "\r" in value or "\n" in value or "\0" in value or "\ufffd" in value:
                    continue  # an unreadable header is dropped, never passed raw
                try:
                    message[name] = value
                except (ValueError, TypeError, IndexError):
                    continue
    if "Date" not in message:
        message["Date"] = formatdate(localtime=True)
    message["Subject"] = safe(subject)
    message["Message-ID"] = make_msgid(domain=hostname)
    message["Auto-Submitted"] = "auto-generated"
    kept = kept or KeptContent()
    if kept.text:
        text = f"{text}\n\n-- \n\n{kept.text}"
    if kept.html:
        cut = html.lower().rfind("</body>")
        html = html[:cut] + f"<hr>{kept.html}" + html[cut:] if cut >= 0 else html + kept.html
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    if kept.inline_images:
        html_part = message.get_body(("html",))
        assert isinstance(html_part, EmailMessage)
        for image in kept.inline_images:
            maintype, _, subtype = image.true_type.partition("/")
            html_part.add_related(image.read(), maintype=maintype, subtype=subtype,
                                  cid=f"<{safe(image.content_id or '')}>")
    streams: dict[bytes, File] = {}
    for file in kept.files:
        maintype, _, subtype = file.true_type.partition("/")
        message.add_attachment(b"", maintype=maintype or "application",
                               subtype=subtype or "octet-stream", filename=safe(file.name))
        placeholder = f"pli-file-{secrets.token_hex(12)}"
        attachment = list(message.iter_attachments())[-1]
        attachment.set_payload(placeholder + "\n")
        streams[placeholder.encode() + b"\r\n"] = file
    return _with_streams(message.as_bytes(), streams)


def _with_streams(rendered: bytes, streams: dict[bytes, File]) -> tuple[Segment, ...]:
    """The notice's bytes, each placeholder replaced by its file encoded as it is read."""
    segments: list[Segment] = []
    rest = rendered
    for placeholder, file in streams.items():
        before, found, rest = rest.partition(placeholder)
        assert found, "a kept attachment's placeholder went missing"
        segments.append(before)
        segments.append(_base64_lines(file.chunks))
    segments.append(rest)
    return tuple(s for s in segments if s != b"")


def _base64_lines(chunks: Callable[[], Iterable[bytes]]) -> Callable[[], Iterator[bytes]]:
    def lines() -> Iterator[bytes]:
        carry = b""
        for chunk in chunks():
            data = carry + chunk
            usable = len(data) - len(data) % _LINE
            carry = data[usable:]
            if usable:
                yield base64.encodebytes(data[:usable]).replace(b"\n", b"\r\n")
        if carry:
            yield base64.encodebytes(carry).replace(b"\n", b"\r\n")
    return lines


def receipt(*, sender: str, subject: str, text: str, hostname: str) -> bytes:
    message = EmailMessage(policy=POLICY)
    message["From"] = f"Pli <{safe(sender)}>"
    message["To"] = safe(sender)
    message["Subject"] = safe(subject)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=hostname)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()
