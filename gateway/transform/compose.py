"""Build the emails Pli sends in place of a protected message: the notice and the receipt.

Only the headers that carry no content are kept from the original (From, To, Cc, Reply-To,
Date, In-Reply-To, References), so threading works; everything else (Subject,
Thread-Topic, Thread-Index, Keywords, Comments, X- headers...) is left behind by
construction. Every header value is checked for line breaks before it is written.
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import formatdate, make_msgid

from gateway.errors import MessageRejected, bilingual
from gateway.transform.extract import File

KEPT_HEADERS = ("From", "To", "Cc", "Reply-To", "Date", "In-Reply-To", "References")

POLICY = email.policy.SMTP.clone(max_line_length=78)


def safe(value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise MessageRejected(bilingual(
            "Un en-tête du message contient un saut de ligne : il ne peut pas être protégé "
            "tel quel", "A header of the message contains a line break; it cannot be "
            "protected as it is"))
    return value


def notice(original: Message | None, *, subject: str, text: str, html: str,
           hostname: str, kept: KeptContent | None = None) -> bytes:
    message = EmailMessage(policy=POLICY)
    if original is not None:
        for name in KEPT_HEADERS:
            try:
                values = [str(v) for v in original.get_all(name) or ()]
            except (ValueError, TypeError, IndexError):
                continue  # an unreadable header is dropped, never passed raw
            for value in values:
                if "\r" in value or "\n" in value or "\0" in value:
                    continue
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
            html_part.add_related(image.data, maintype=maintype, subtype=subtype,
                                  cid=f"<{safe(image.content_id or '')}>")
    for file in kept.files:
        maintype, _, subtype = file.true_type.partition("/")
        message.add_attachment(file.data, maintype=maintype or "application",
                               subtype=subtype or "octet-stream", filename=safe(file.name))
    return message.as_bytes()


@dataclass(frozen=True)
class KeptContent:
    """What a protect rule chose to leave in the email (body "keep", attachments "keep")."""

    text: str = ""
    html: str = ""
    files: tuple[File, ...] = ()
    inline_images: tuple[File, ...] = ()


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
