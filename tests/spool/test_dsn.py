"""Delivery status notifications: what the sender is told when mail cannot be delivered,
and that a notification that cannot be delivered itself goes nowhere (no mail loops)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gateway.spool.dsn import build_dsn, status_of
from gateway.spool.store import QueuedMessage, Recipient, new_queue_id
from tests.spool.helpers import (
    OTHER_PATIENT,
    PATIENT,
    message,
    named,
    null_sender,
    parse_dsn,
    queued,
    spool_of,
    stays,
    submit,
    wait_queue_empty,
)
from tests.support import (
    ADDRESS,
    Gateway,
    LoopThread,
    Provider,
    RunningApp,
    make_gateway,
    wait_until,
)

Events = list[dict[str, Any]]


def test_the_sender_gets_a_dsn_naming_the_refused_recipient_and_the_providers_answer(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    provider.handler.rcpt_replies[OTHER_PATIENT] = "550 5.1.1 <other.patient@example.org>: " \
                                                   "no such mailbox"
    queue_id = submit(gw, (PATIENT, OTHER_PATIENT))
    wait_until(lambda: any(null_sender(r.mail_from) for r in provider.received), timeout=10)
    notice = next(r for r in provider.received if null_sender(r.mail_from))
    assert notice.rcpt_tos == [ADDRESS]

    dsn = parse_dsn(notice.content)
    assert dsn.message["To"].addresses[0].addr_spec == ADDRESS
    assert dsn.message["Auto-Submitted"] == "auto-replied"
    assert dsn.per_message["X-Pli-Queue-ID"] == queue_id
    assert len(dsn.per_recipient) == 1  # the delivered recipient is not reported
    block = dsn.per_recipient[0]
    assert block["Final-Recipient"] == f"rfc822; {OTHER_PATIENT}"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"
    assert "550 5.1.1" in block["Diagnostic-Code"] and "no such mailbox" in block["Diagnostic-Code"]
    assert "n'a pas pu être remis" in dsn.text  # French first
    assert "could not be delivered" in dsn.text
    assert dsn.text.index("n'a pas pu être remis") < dsn.text.index("could not be delivered")
    listed = [line.strip() for line in dsn.text.splitlines() if line.startswith("  - ")]
    assert len(listed) == 2  # once in French, once in English
    for line in listed:
        assert line.startswith(f"- {OTHER_PATIENT}") and "550 5.1.1" in line
        assert "no such mailbox" in line
    assert "Subject: Rendez-vous" in str(dsn.headers.get_payload())


def test_after_its_lifetime_a_message_is_given_up_and_the_sender_told(
        tmp_path: Path, loop: LoopThread, events: Events) -> None:
    gw = make_gateway(tmp_path / "pli", delivery="lifetime = 0.5\n")
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    provider.handler.rcpt_replies[PATIENT] = "451 4.2.1 Mailbox temporarily unavailable"
    app = RunningApp(loop, gw).start()
    try:
        queue_id = submit(gw)
        wait_until(lambda: provider.received, timeout=10)
        wait_queue_empty(gw)
        stays(lambda: len(provider.received) == 1, 0.5)
    finally:
        app.stop()
        provider.stop()
    notice = provider.received[0]
    assert null_sender(notice.mail_from) and notice.rcpt_tos == [ADDRESS]
    dsn = parse_dsn(notice.content)
    block = dsn.per_recipient[0]
    assert block["Final-Recipient"] == f"rfc822; {PATIENT}"
    assert block["Status"] == "5.2.1"  # the provider's detail, reported as final
    assert "Pli gave up" in block["Diagnostic-Code"]
    assert "Pli gave up" in dsn.text and "451 4.2.1 Mailbox temporarily unavailable" in dsn.text
    assert len(named(events, "delivery.deferred", queue_id=queue_id)) >= 2
    assert named(events, "delivery.expired", queue_id=queue_id, recipient=PATIENT)


def test_a_dsn_refused_by_the_provider_is_dropped_not_bounced(
        gw: Gateway, provider: Provider, pli: RunningApp, events: Events) -> None:
    provider.handler.rcpt_replies[PATIENT] = "550 5.1.1 No such mailbox"
    provider.handler.rcpt_replies[ADDRESS] = "550 5.7.1 Null sender refused"
    queue_id = submit(gw)
    wait_until(lambda: named(events, "delivery.dsn_dropped"), timeout=10)
    wait_queue_empty(gw)
    stays(lambda: not queued(gw), 0.5)
    assert provider.received == []
    assert len(named(events, "dsn.queued")) == 1
    assert named(events, "dsn.queued")[0]["about"] == queue_id


def test_a_dsn_that_never_gets_through_expires_without_a_dsn_of_its_own(
        tmp_path: Path, loop: LoopThread, events: Events) -> None:
    gw = make_gateway(tmp_path / "pli", delivery="lifetime = 0.5\n")
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    provider.handler.mail_replies.extend(["451 4.3.2 Try again later"] * 200)
    app = RunningApp(loop, gw).start()
    try:
        submit(gw)
        wait_until(lambda: named(events, "delivery.dsn_dropped"), timeout=10)
        wait_queue_empty(gw)
        stays(lambda: not queued(gw), 0.5)
    finally:
        app.stop()
        provider.stop()
    assert provider.received == []
    assert len(named(events, "dsn.queued")) == 1
    assert len(named(events, "delivery.expired")) == 2  # the message, then its DSN


def test_a_temporary_answer_is_reported_as_a_final_status() -> None:
    assert status_of("451 4.2.2 Mailbox full") == "5.2.2"
    assert status_of("550 5.1.1 No such user") == "5.1.1"
    assert status_of("554 Transaction failed") == "5.0.0"


def test_a_dsn_keeps_the_original_headers_but_not_the_body() -> None:
    original = QueuedMessage(id="0000ABC", mail_from=ADDRESS,
                             recipients=[Recipient(PATIENT, "failed", "550 5.1.1 Unknown")],
                             created=time.time(), size=0, route_sender=ADDRESS)
    content = message(body="Résultats de la biopsie : confidentiel")
    header = content.split(b"\r\n\r\n")[0] + b"\r\n"
    dsn = parse_dsn(build_dsn(original, original.recipients, header, "pli.example"))
    assert "Subject: Rendez-vous" in str(dsn.headers.get_payload())
    assert "biopsie" not in dsn.message.as_string()


def test_a_sender_with_an_accented_address_gets_a_dsn_and_nobody_gets_the_message_twice(
        gw: Gateway, provider: Provider, pli: RunningApp, events: Events) -> None:
    sender = "secrétariat@cabinet-martin.fr"
    provider.handler.rcpt_replies[OTHER_PATIENT] = "550 5.1.1 No such mailbox"
    data = (f"From: {sender}\r\nTo: {PATIENT}, {OTHER_PATIENT}\r\nSubject: Rendez-vous\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nBonjour\r\n").encode()
    # Queued as the intake queues an SMTPUTF8 submission.
    spool_of(gw).enqueue(QueuedMessage(
        id=new_queue_id(), mail_from=sender,
        recipients=[Recipient(PATIENT), Recipient(OTHER_PATIENT)], created=time.time(),
        size=len(data), route_sender=sender, smtputf8=True), data)
    wait_until(lambda: len(provider.received) >= 2, timeout=10)
    wait_queue_empty(gw)
    stays(lambda: len(provider.received) == 2, 1.0)
    message_copy, notice = provider.received
    assert message_copy.rcpt_tos == [PATIENT]
    assert null_sender(notice.mail_from) and notice.rcpt_tos == [sender]
    dsn = parse_dsn(notice.content)
    assert dsn.message["To"].addresses[0].addr_spec == sender
    assert dsn.per_recipient[0]["Final-Recipient"] == f"rfc822; {OTHER_PATIENT}"
    assert named(events, "delivery.internal_error") == []
