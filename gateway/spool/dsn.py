"""Delivery status notifications (RFC 3464) sent back to the sender, in French and English.

A DSN names each recipient that could not be reached and the provider's answer, so the
practice knows whom to call. It travels with the null sender (``<>``) so it can never
bounce in a loop.
"""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate, make_msgid

from gateway.message.header import parse_header
from gateway.spool.store import QueuedMessage, Recipient, Spool, new_queue_id

_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def status_of(reply: str) -> str:
    match = _STATUS.search(reply)
    if match and match.group(1)[0] in "45":
        return "5" + match.group(1)[1:]  # a DSN reports a final failure
    return "5.0.0"


def build_dsn(
    original: QueuedMessage, failed: list[Recipient], original_header: bytes, hostname: str
) -> bytes:
    """``original_header`` is the header block of the message that failed."""
    date = parse_header(original_header).get("date") or ""
    lines_fr = [f"  - {r.address} : {r.reply}" for r in failed]
    lines_en = [f"  - {r.address}: {r.reply}" for r in failed]
    text = "\n".join([
        "Bonjour,",
        "",
        "Votre message n'a pas pu être remis aux destinataires suivants.",
        "La réponse de leur serveur est indiquée pour chacun :",
        "",
        *lines_fr,
        "",
        "Vérifiez l'adresse ou prévenez le destinataire par un autre moyen.",
        f"Message envoyé le : {date}" if date else "",
        "",
        "-- ",
        "",
        "Hello,",
        "",
        "Your message could not be delivered to the following recipients.",
        "The answer from their server is given for each:",
        "",
        *lines_en,
        "",
        "Check the address, or reach the recipient another way.",
        "",
        f"Pli, {hostname}",
    ])

    per_message = (
        f"Reporting-MTA: dns; {hostname}\r\n"
        f"X-Pli-Queue-ID: {original.id}\r\n"
        f"Arrival-Date: {format_datetime(datetime.fromtimestamp(original.created, UTC))}"
        "\r\n"
    )
    per_recipient = "".join(
        "\r\n"
        f"Final-Recipient: rfc822; {r.address}\r\n"
        "Action: failed\r\n"
        f"Status: {status_of(r.reply)}\r\n"
        f"Diagnostic-Code: smtp; {' '.join(r.reply.split())}\r\n"
        f"Last-Attempt-Date: {formatdate(time.time(), localtime=False)}\r\n"
        for r in failed
    )
    original_headers = original_header if original_header.endswith(b"\r\n") else (
        original_header + b"\r\n")
    boundary = f"pli-dsn-{original.id}"
    body_b64 = base64.encodebytes(text.replace("\n", "\r\n").encode("utf-8"))
    head = "\r\n".join([
        f"From: Pli <MAILER-DAEMON@{hostname}>",
        f"To: <{original.mail_from}>",
        "Subject: Message non remis / Undelivered mail",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "",
        "",
    ])
    parts = [
        head.encode("utf-8"),  # the sender's address may be internationalised (SMTPUTF8)
        body_b64.replace(b"\n", b"\r\n"),
        f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n".encode(),
        (per_message + per_recipient).encode("utf-8"),
        f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n".encode(),
        original_headers,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def queue_dsn(spool: Spool, original: QueuedMessage, failed: list[Recipient], hostname: str,
              now: float) -> QueuedMessage:
    """Blocking (on the spool's threads): queue the DSN telling the sender of ``original``
    about ``failed``, through the account the original went out with; return it."""
    dsn = build_dsn(original, failed, spool.header_block(original.id), hostname)
    notice = QueuedMessage(
        id=new_queue_id(),
        mail_from="",
        recipients=[Recipient(original.mail_from)],
        created=now,
        size=len(dsn),
        route_sender=original.route_sender,
        smtputf8=not original.mail_from.isascii(),
        kind="dsn",
        extra={"about": original.id},
    )
    spool.enqueue(notice, dsn)
    return notice
