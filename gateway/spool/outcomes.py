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


def is_busy_reply(reply: str) -> bool:
    """The provider says this account has too many connections or submissions under way:
    a 432 or a 4.3.2 anywhere in its answer (Pli may have wrapped it). Microsoft 365
    answers "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded" when another
    device of the practice holds the mailbox's three connections."""
    return bool(_BUSY.search(reply))


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
           delivery: Delivery) -> Settlement:
    """After an attempt at ``tried``: count it, and set when the recipients still waiting
    are tried again, or give them up once the message has outlived ``lifetime``."""
    outcome = Settlement(sent=[r for r in tried if r.state == "sent"],
                         bounced=[r for r in tried if r.state == "failed"])
    still = message.pending
    if not still:
        return outcome
    message.attempts += 1
    if expired(message.created, now, delivery.lifetime):
        for r in still:
            r.state = "failed"
            r.reply = (f"{r.reply or message.last_error} (Pli gave up after "
                       f"{span(delivery.lifetime)} of retries)")
        outcome.expired = still
        return outcome
    first = delivery.retry_min
    if all(is_busy_reply(r.reply or "") for r in still):
        first = min(first, BUSY_RETRY)  # busy, not down: 30 s, 60 s, 120 s...
    outcome.delay = next_delay(message.attempts, first, delivery.retry_max)
    message.next_attempt = now + outcome.delay
    outcome.deferred = still
    return outcome


def wants_dsn(message: QueuedMessage) -> bool:
    """A failure is told to the sender, except for a bounce itself (or mail without a
    sender to tell): a DSN about a DSN could loop between two servers forever."""
    return message.kind != "dsn" and bool(message.mail_from)


def span(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"
