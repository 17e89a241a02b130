"""What the provider's answers mean, recipient by recipient, and what follows from them.

Pure: no sockets, no files, no clock and no log; the delivery loop gives the time and
writes down what these functions decide. An answer is a success (2xx), a refusal for
good (5xx) or a reason to try again later (4xx, a timeout, a refused connection); a
recipient refused for good is reported to the sender in a DSN, once, and a bounce is
never bounced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.config import Delivery
from gateway.spool.retry import BUSY_RETRY, expired, next_delay
from gateway.spool.store import QueuedMessage, Recipient


class TemporaryError(Exception):
    """The attempt failed in a way that a later attempt may not (4xx, network)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


_BUSY = re.compile(r"(?<![\d.])(?:432|4\.3\.2)(?![\d.])")
_POLICY_4 = re.compile(r"(?<![\d.])4\.7\.\d{1,3}(?![\d.])")
_RATE_WORDS = re.compile(r"rate|throttl|too many|limit|exceeded|slow down|busy", re.IGNORECASE)
_RATE_PHRASES = re.compile(r"limit exceeded|rate limit|too many messages|slow down|sending rate",
                           re.IGNORECASE)
_CONGESTION_5 = re.compile(r"(?<![\d.])5\.4\.5(?![\d.])")
_STATUS_5 = re.compile(r"(?<![\d.])5\.\d{1,3}\.\d{1,3}(?![\d.])")
_QUOTA_WORDS = re.compile(r"quota|sending limit|daily limit|limit exceeded", re.IGNORECASE)


def is_busy_reply(reply: str) -> bool:
    """The provider says this account has too many connections or submissions under way:
    a 432 or a 4.3.2 anywhere in its answer (Pli may have wrapped it). Microsoft 365
    answers "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded" when another
    device of the practice holds the mailbox's three connections."""
    return bool(_BUSY.search(reply))


def is_rate_reply(reply: str) -> bool:
    """The provider says this account sends too fast for now: busy (above), a 4.7.x whose
    words speak of a rate or a limit ("421 4.7.0 Too many connections"), or a 4xx that
    says so in as many words (IONOS: "450 Mail send limit exceeded")."""
    return (is_busy_reply(reply)
            or bool(_POLICY_4.search(reply) and _RATE_WORDS.search(reply))
            or bool(reply.lstrip().startswith("4") and _RATE_PHRASES.search(reply)))


def is_quota_reply(reply: str) -> bool:
    """A 5xx that is no refusal of the message but of the account's day: its quota is
    spent ("550 5.4.5 Daily user sending quota exceeded", Microsoft's and Google's
    words; "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException").
    Such mail goes the next day; it must not bounce. X.4.5 is "mail system congestion"
    (RFC 3463), never a verdict on the message."""
    if not reply.lstrip().startswith("5"):
        return False
    return bool(_CONGESTION_5.search(reply)
                or (_STATUS_5.search(reply) and _QUOTA_WORDS.search(reply)))


def is_final(code: int, reply: str) -> bool:
    """A refusal for good: a 5xx that is not about the account's quota."""
    return code >= 500 and not is_quota_reply(reply)


def batches(recipients: list[Recipient], size: int | None) -> list[list[Recipient]]:
    """The recipients in transactions of at most ``size`` each (all in one without)."""
    if not size or len(recipients) <= size:
        return [recipients] if recipients else []
    return [recipients[i:i + size] for i in range(0, len(recipients), size)]


@dataclass
class Settlement:
    """What one attempt came to, for the log: who has the message now, who was refused
    for good, who waits and for how long, who was given up after the lifetime."""

    sent: list[Recipient] = field(default_factory=list)
    bounced: list[Recipient] = field(default_factory=list)
    deferred: list[Recipient] = field(default_factory=list)
    expired: list[Recipient] = field(default_factory=list)
    delay: float = 0.0


def defer_all(message: QueuedMessage, reply: str) -> None:
    """The attempt did not reach the recipients (no connection, a refused login, MAIL
    refused for now): each recipient still waiting keeps this answer."""
    message.last_error = reply
    for r in message.pending:
        r.reply = reply


def settle(message: QueuedMessage, tried: list[Recipient], now: float,
           delivery: Delivery, *, not_before: float = 0.0) -> Settlement:
    """After an attempt at ``tried``: count it, and set when the recipients still waiting
    are tried again (not before ``not_before``: a day's quota spent), or give them up once
    the message has outlived ``lifetime``."""
    outcome = Settlement(sent=[r for r in tried if r.state == "sent"],
                         bounced=[r for r in tried if r.state == "failed"])
    still = [r for r in tried if r.state == "pending"]
    if not still:
        return outcome
    message.attempts += 1
    if expired(message.created, now, delivery.lifetime):
        give_up(message, still, delivery)
        outcome.expired = still
        return outcome
    first = delivery.retry_min
    if all(is_rate_reply(r.reply or "") for r in still):
        first = min(first, BUSY_RETRY)  # busy, not down: 30 s, 60 s, 120 s...
    outcome.delay = max(next_delay(message.attempts, first, delivery.retry_max),
                        not_before - now)
    message.next_attempt = now + outcome.delay
    outcome.deferred = still
    return outcome


def wait_for_limit(message: QueuedMessage, waiting: list[Recipient], until: float,
                   reason: str, now: float, delivery: Delivery, *,
                   deferred: bool) -> list[Recipient]:
    """Recipients not tried because of a sending limit wait until ``until``, without it
    counting as an attempt; once the message has outlived ``lifetime`` they are given up
    (and returned). ``deferred``: others of the message were just deferred."""
    if expired(message.created, now, delivery.lifetime):
        give_up(message, waiting, delivery)
        return waiting
    message.next_attempt = max(until, message.next_attempt) if deferred else until
    message.waiting = reason
    return []


def give_up(message: QueuedMessage, recipients: list[Recipient], delivery: Delivery) -> None:
    for r in recipients:
        r.state = "failed"
        r.reply = (f"{r.reply or message.last_error or '451 4.4.5 ' + message.waiting} "
                   f"(Pli gave up after {span(delivery.lifetime)} of retries)")


def wants_dsn(message: QueuedMessage) -> bool:
    """A failure is told to the sender, except for a bounce itself (or mail without a
    sender to tell): a DSN about a DSN could loop between two servers forever."""
    return message.kind != "dsn" and bool(message.mail_from)


def span(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"
