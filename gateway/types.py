"""Leaf types shared by every part of the message path. Imports nothing from the package."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


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
class Received:
    """What the intake noticed while the message arrived (see ``gateway.intake.data``)."""

    size: int = 0
    long_lines: bool = False  # a line longer than 998 octets


@dataclass(frozen=True)
class Submission:
    """One message as the intake hands it to the pipeline: its envelope and the file it
    was written to as it arrived (CRLF line ends, dot-unstuffed)."""

    envelope: Envelope
    path: Path
    user: str
    client: str
    allowed_senders: frozenset[str] = field(default_factory=frozenset)
    received: Received = field(default_factory=Received)
    queue_id: str = ""


# --- What the inspector found in a message ------------------------------------------------


@dataclass(frozen=True)
class AttachmentFacts:
    """One attached part, as found at any depth of the MIME tree.

    ``true_type`` comes from the decoded bytes (libmagic), never from the declared type or
    the file name. ``filename`` is health data: keep it in memory, never log it.
    """

    filename: str | None
    declared_type: str
    true_type: str
    size: int
    inline: bool = False
    depth: int = 0


@dataclass(frozen=True)
class MessageFacts:
    """What the policy may look at. ``subject`` and ``text`` are health data: never log them.

    ``header_from`` holds the addresses of the From: header, lower-cased; ``text`` joins the
    text of the text/plain and text/html parts (tags removed), bounded in length.
    """

    header_from: tuple[str, ...] = ()
    subject: str = ""
    size: int = 0
    attachments: tuple[AttachmentFacts, ...] = ()
    text: str = ""
    defects: int = 0


# --- What the policy decided -------------------------------------------------------------

ActionName = Literal["pass", "protect", "block"]
AccessCodeMode = Literal["none", "sender-tag", "generated", "sender-tag-or-generated"]
NoticeEvent = Literal["opened", "downloaded", "expired"]
NOTICE_EVENTS: tuple[NoticeEvent, ...] = ("opened", "downloaded", "expired")
"""What the sender may be told about a link: the patient first opened the message, a
document was downloaded, the link expired without ever being opened."""


@dataclass(frozen=True)
class ProtectSettings:
    """How a protected copy is made.

    In a decision, ``access_code``, ``notify``, ``expiry_days`` and ``download_limit`` are
    resolved for the message at hand, from the rule and the sender's subject tags:
    ``access_code`` is "sender-tag" only when the subject carries a usable ``[code:NNNN]``
    tag, else "generated" (or "none"). ``max_expiry_days`` and ``max_download_limit``
    bound what a tag or the sender's page may ask for (never less than the rule's own
    values). ``reply_max_files`` and ``reply_max_bytes`` bound the patient's secure
    reply (0 files and 0 bytes: no reply); ``manage_link`` sends the sender a receipt
    with a link to revoke or extend the link, whatever the access code.
    """

    attachments: Literal["link", "keep"] = "link"
    body: Literal["minimal", "keep"] = "minimal"
    subject: Literal["neutral", "keep"] = "neutral"
    expiry_days: int = 14
    download_limit: int = 5
    access_code: AccessCodeMode = "generated"
    language: Literal["fr", "en"] = "fr"
    template: str = "default"
    keep_inline_images: bool = False
    notify: tuple[NoticeEvent, ...] = ()
    max_expiry_days: int = 0
    max_download_limit: int = 0
    reply_max_files: int = 5
    reply_max_bytes: int = 20 * 1024 * 1024
    manage_link: bool = True

    def __post_init__(self) -> None:
        # A maximum below the value itself (or left at 0) is the value: nothing more.
        object.__setattr__(self, "max_expiry_days", max(self.max_expiry_days, self.expiry_days))
        object.__setattr__(self, "max_download_limit",
                           max(self.max_download_limit, self.download_limit))
        object.__setattr__(self, "notify",
                           tuple(e for e in NOTICE_EVENTS if e in self.notify))


@dataclass(frozen=True)
class BlockSettings:
    """The sentence the sender reads when a message is refused, in French and English."""

    message_fr: str
    message_en: str
    code: int = 550
    status: str = "5.7.1"


@dataclass(frozen=True)
class Decision:
    """What happens to a recipient's copy: the rule that decided, its action and settings."""

    rule: str
    action: ActionName
    protect: ProtectSettings | None = None
    block: BlockSettings | None = None


@dataclass(frozen=True)
class RecipientGroup:
    """Recipients that share one decision, in envelope order: they get one copy."""

    decision: Decision
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Decisions:
    """Every recipient's decision, grouped; groups are in order of first appearance."""

    groups: tuple[RecipientGroup, ...] = ()

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(r for group in self.groups for r in group.recipients)

    @property
    def blocked(self) -> tuple[RecipientGroup, ...]:
        return tuple(g for g in self.groups if g.decision.action == "block")

    def decision_for(self, recipient: str) -> Decision | None:
        for group in self.groups:
            if recipient in group.recipients:
                return group.decision
        return None


# --- What leaves Pli -----------------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of the submitted message's file, copied as they are."""

    start: int
    end: int


Segment = bytes | ByteRange | Callable[[], Iterable[bytes]]
"""A piece of an outgoing message: bytes made by Pli, a range of the original copied by
reference, or a stream made when the copy is written (a part encoded anew)."""


@dataclass(frozen=True)
class Outgoing:
    """One message to relay: its envelope and its body, a copy per recipient group."""

    mail_from: str
    recipients: tuple[str, ...]
    body: tuple[Segment, ...]
