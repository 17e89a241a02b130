"""Leaf types shared by every part of the message path. Imports nothing from the package."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Envelope:
    """What the SMTP session said about a message, apart from its bytes.

    ``mail_from`` is the reverse path ("" for the null sender of a bounce);
    ``rcpt_tos`` keeps the order the client gave.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    smtputf8: bool = False


@dataclass(frozen=True)
class Submission:
    """One message as the intake hands it to the pipeline."""

    envelope: Envelope
    content: bytes
    user: str
    client: str
    allowed_senders: frozenset[str] = field(default_factory=frozenset)
