"""Leaf: exceptions that carry the SMTP reply the client will see.

The intake turns any of these into a reply in one place (its ``handle_exception`` and
``handle_DATA``); the rest of the program raises them and never formats replies itself.
"""

from __future__ import annotations

import re
import unicodedata

_PLAIN = {"\u2019": "'", "\u2018": "'", "\u00ab": '"', "\u00bb": '"', "\u2013": "-",
          "\u2014": "-", "\u2026": "...", "\u00a0": " ", "\u202f": " ", "\u0153": "oe",
          "\u0152": "OE", "\u00e6": "ae"}


def ascii_fold(text: str) -> str:
    """SMTP replies are read by clients that may not have asked for UTF-8: keep the
    letters, drop the accents ("refusé" becomes "refuse")."""
    for char, plain in _PLAIN.items():
        text = text.replace(char, plain)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and (c.isprintable() or c == " "))


_REPLY_CODES = re.compile(r"^\s*([2-5]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3}))?")


def reply_codes(reply: str) -> str | None:
    """An SMTP answer reduced to its codes ("550 5.1.1"), or None without any: what logs
    and the audit trail keep of a provider's words, which may quote a subject."""
    match = _REPLY_CODES.match(reply)
    return " ".join(g for g in match.groups() if g) if match else None


def bilingual(french: str, english: str) -> str:
    """The text of a reply a person reads: French first, as everywhere in Pli."""
    return f"{french} / {english}"


def smtp_reply(code: int, status: str, french: str, english: str) -> str:
    return f"{code} {status} {ascii_fold(' '.join(bilingual(french, english).split()))}"


class PliError(Exception):
    """Base of every error Pli reports to a person (CLI or SMTP client)."""


class SmtpReplyError(PliError):
    """An error that ends an SMTP command with the given reply."""

    code = 451
    status = "4.3.0"

    def __init__(self, text: str, *, code: int | None = None, status: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    @property
    def reply(self) -> str:
        # A reply is one ASCII line: anything that could break the protocol is flattened.
        text = ascii_fold(" ".join(self.text.split()))
        return f"{self.code} {self.status} {text}"


class SenderNotAllowed(SmtpReplyError):
    code = 550
    status = "5.7.1"


class MessageRejected(SmtpReplyError):
    """The message itself cannot be accepted (malformed, too big, refused by policy)."""

    code = 550
    status = "5.6.0"


class TemporaryFailure(SmtpReplyError):
    """Pli could not take the message now; the client should try again later."""

    code = 451
    status = "4.3.0"


class InsufficientStorage(SmtpReplyError):
    """The disk holding the spool or the vault is full, or too full to take a message of
    the largest allowed size: the client keeps the message and tries again later."""

    code = 452
    status = "4.3.1"

    def __init__(self) -> None:
        super().__init__(bilingual(
            "Le disque du serveur Pli est plein : message non pris, il reste dans votre "
            "messagerie ; réessayez plus tard et prévenez votre prestataire informatique",
            "Pli's disk is full: the message was not taken and stays in your mail client; "
            "try again later and tell your IT contractor"))


class ConfigError(PliError):
    """A configuration file is missing, unreadable or invalid; the text says where."""


class PolicyBlocked(SmtpReplyError):
    """The policy refuses the message; the text is the policy's sentence."""

    code = 550
    status = "5.7.1"

    @classmethod
    def from_reply(cls, reply: str) -> PolicyBlocked:
        code, status, text = reply.split(" ", 2)
        return cls(text, code=int(code), status=status)
