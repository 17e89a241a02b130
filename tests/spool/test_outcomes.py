"""What the provider's answers come to, decided without a provider: retry times, expiry,
who is told."""

from __future__ import annotations

from gateway.config import Delivery
from gateway.spool import outcomes
from gateway.spool.store import QueuedMessage, Recipient

NOW = 1_750_000_000.0
DELIVERY = Delivery()  # the shipped settings: 300 s doubling to 4000 s, for 5 days


def message(*states: str, created: float = NOW - 60, kind: str = "message") -> QueuedMessage:
    recipients = [Recipient(f"p{n}@example.org", state=s)  # type: ignore[arg-type]
                  for n, s in enumerate(states)]
    return QueuedMessage(id="Q1", mail_from="dr@cabinet.fr", recipients=recipients,
                         created=created, size=10, route_sender="dr@cabinet.fr",
                         kind=kind)  # type: ignore[arg-type]


def test_a_deferred_recipient_waits_retry_min_then_twice_as_long_each_time() -> None:
    m = message("sent", "pending")
    m.recipients[1].reply = "451 4.3.0 Try later"
    first = outcomes.settle(m, m.recipients, NOW, DELIVERY)
    assert [r.address for r in first.sent] == ["p0@example.org"]
    assert [r.address for r in first.deferred] == ["p1@example.org"]
    assert (first.delay, m.next_attempt, m.attempts) == (300, NOW + 300, 1)
    second = outcomes.settle(m, m.pending, NOW, DELIVERY)
    assert second.delay == 600 and m.attempts == 2


def test_an_account_busy_elsewhere_is_tried_again_after_30_seconds() -> None:
    m = message("pending")
    outcomes.defer_all(m, "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded")
    assert outcomes.settle(m, m.pending, NOW, DELIVERY).delay == 30


def test_after_the_lifetime_the_recipients_still_waiting_fail_with_the_last_answer() -> None:
    m = message("pending", created=NOW - 5 * 86400)
    outcomes.defer_all(m, "451 4.4.1 Cannot reach the provider smtp.example.net:587")
    settled = outcomes.settle(m, m.pending, NOW, DELIVERY)
    assert [r.address for r in settled.expired] == ["p0@example.org"]
    assert m.recipients[0].state == "failed"
    assert m.recipients[0].reply.startswith("451 4.4.1 Cannot reach")
    assert m.recipients[0].reply.endswith("(Pli gave up after 5 days of retries)")
    assert m.unreported == m.recipients


def test_a_bounce_is_never_bounced() -> None:
    assert outcomes.wants_dsn(message("failed"))
    assert not outcomes.wants_dsn(message("failed", kind="dsn"))
    nobody = message("failed")
    nobody.mail_from = ""
    assert not outcomes.wants_dsn(nobody)


def test_which_answers_are_about_the_accounts_pace_or_its_day() -> None:
    slow = ["432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
            "421 4.7.0 Too many connections, slow down",
            "451 4.4.1 smtp.example.net:587 answered 421 4.7.0 Too many messages",
            "450 Requested mail action not taken: mailbox unavailable\nMail send limit "
            "exceeded."]
    day = ["550 5.4.5 Daily user sending quota exceeded",
           "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"]
    neither = ["451 4.7.1 Greylisted, come back in a moment", "550 5.1.1 No such user",
               "451 4.3.0 Mailbox busy, try later",
               "452 4.2.2 Mailbox full", "550 5.7.1 Daily digest refused"]
    assert all(outcomes.is_rate_reply(r) for r in slow)
    assert all(outcomes.is_quota_reply(r) and not outcomes.is_final(550, r) for r in day)
    assert not any(outcomes.is_rate_reply(r) or outcomes.is_quota_reply(r) for r in neither)
    assert outcomes.is_final(550, neither[1]) and not outcomes.is_final(452, neither[2])


def test_recipients_go_in_transactions_of_the_size_allowed() -> None:
    rs = [Recipient(f"p{n}@example.org") for n in range(5)]
    assert [len(b) for b in outcomes.batches(rs, 2)] == [2, 2, 1]
    assert outcomes.batches(rs, None) == [rs] and outcomes.batches([], 2) == []
