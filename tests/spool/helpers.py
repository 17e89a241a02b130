"""Shared by the spool tests: submit through Pli like a mail client, look at the spool, read
DSNs the way a mail program would."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from gateway.spool.store import QueuedMessage, Spool
from tests.support import ADDRESS, HOST, PASSWORD, USER, Gateway, wait_until

PATIENT = "patient@example.org"
OTHER_PATIENT = "other.patient@example.org"


def message(sender: str = ADDRESS, to: str = PATIENT, body: str = "Bonjour") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Rendez-vous"
    msg["Date"] = "Mon, 03 Feb 2025 10:00:00 +0100"
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def submit(gw: Gateway, recipients: tuple[str, ...] = (PATIENT,), data: bytes | None = None,
           sender: str = ADDRESS, login: tuple[str, str] = (USER, PASSWORD)) -> str:
    """Submit one message as Thunderbird would (587, STARTTLS, AUTH); return its queue id."""
    data = data if data is not None else message(sender=sender, to=", ".join(recipients))
    with smtplib.SMTP(HOST, gw.submission_port, local_hostname="[192.0.2.1]",
                      timeout=10) as client:
        client.starttls(context=gw.client_context())
        client.ehlo("[192.0.2.1]")
        client.login(*login)
        assert client.mail(sender)[0] == 250
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(data)
    assert code == 250, (code, text)
    words = text.decode().split()
    assert words[:3] == ["2.0.0", "Queued", "as"], text
    return words[3]


def spool_of(gw: Gateway) -> Spool:
    return Spool(gw.settings().spool_dir)


def queued(gw: Gateway) -> list[QueuedMessage]:
    return list(spool_of(gw).messages())


def wait_queue_empty(gw: Gateway, timeout: float = 10.0) -> None:
    spool = spool_of(gw)
    wait_until(lambda: not spool.ids(), timeout)


def wait_deferred(gw: Gateway, queue_id: str, timeout: float = 10.0) -> QueuedMessage:
    """Until the message has had a failed attempt; returns its meta as then written."""
    spool = spool_of(gw)

    def deferred() -> QueuedMessage | None:
        meta = spool.load(queue_id)
        return meta if meta is not None and meta.attempts >= 1 else None
    return wait_until(deferred, timeout)  # type: ignore[no-any-return]


def stays(predicate: Callable[[], bool], seconds: float) -> None:
    """The predicate holds during the whole time (for "never happens twice" checks)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        time.sleep(0.05)


def null_sender(mail_from: str) -> bool:
    """aiosmtpd reports MAIL FROM:<> as "<>"; smtp-sink dumps show it empty."""
    return mail_from in ("", "<>")


def named(events: list[dict[str, object]], name: str, **fields: object) -> list[dict[str, object]]:
    return [e for e in events if e.get("event") == name
            and all(e.get(k) == v for k, v in fields.items())]


@dataclass
class Dsn:
    """A delivery status notification as a mail program sees it (email.message objects)."""

    message: Any
    text: str
    headers: Any  # the text/rfc822-headers part
    per_message: Any
    per_recipient: list[Any]


def parse_dsn(content: bytes) -> Dsn:
    # Headers may hold UTF-8 (RFC 6532): read them as such, as SMTPUTF8-aware programs do.
    msg: Any = email.message_from_string(content.decode("utf-8"), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts: list[Any] = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    blocks: list[Any] = parts[1].get_payload()
    assert len(blocks) >= 2
    return Dsn(msg, parts[0].get_content(), parts[2], blocks[0], blocks[1:])
