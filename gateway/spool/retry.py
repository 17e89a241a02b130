"""When to try again: Postfix's model, a delay that doubles from a minimum to a maximum,
until the message has been in the queue longer than its lifetime."""

from __future__ import annotations

BUSY_RETRY = 30.0
"""The first delay, instead of ``retry_min``, when the provider said this account has
too many connections or submissions under way (it then doubles as usual): Microsoft 365
answers 432 4.3.2 when another device of the practice (a scanner, an Outlook) holds the
mailbox's three connections, and one is usually free again within seconds."""


def next_delay(attempts: int, minimum: float, maximum: float) -> float:
    """Delay after the ``attempts``-th failed attempt (1 for the first)."""
    exponent = max(0, min(attempts - 1, 30))
    return float(min(maximum, minimum * (2**exponent)))


def expired(created: float, now: float, lifetime: float) -> bool:
    return now - created >= lifetime
