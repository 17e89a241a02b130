"""The SMTP reply for a message the policy blocks, for the intake to send as it is."""

from __future__ import annotations

from gateway.errors import ascii_fold
from gateway.types import Decisions

MAX_NAMED = 5


def block_reply(decisions: Decisions, *, utf8: bool = False) -> str | None:
    """``"550 5.7.1 <French> / <English>"`` when a recipient is blocked, else None.

    One line. When only some recipients are blocked, they are named, so the sender knows
    which address to take out. Without ``utf8`` (a session without SMTPUTF8) the text is
    folded to ASCII, as SMTP replies must be.
    """
    blocked = decisions.blocked
    if not blocked:
        return None
    everyone = len(blocked) == len(decisions.groups)
    french: list[str] = []
    english: list[str] = []
    code, status = 550, "5.7.1"
    for group in blocked:
        settings = group.decision.block
        if settings is None:
            continue
        code, status = settings.code, settings.status
        fr, en = _sentence(settings.message_fr), _sentence(settings.message_en)
        if not everyone:
            names = _names(group.recipients)
            fr = f"{fr} (destinataires concernés : {names})"
            en = f"{en} (recipients concerned: {names})"
        french.append(fr)
        english.append(en)
    if not french:
        french, english = ["Message refusé par la politique du cabinet."], [
            "Message refused by the practice's policy."
        ]
    text = " ".join(french) + " / " + " ".join(english)
    if not utf8:
        text = ascii_fold(text)
    return f"{code} {status} {' '.join(text.split())}"


def _sentence(text: str) -> str:
    return " ".join(text.split())


def _names(recipients: tuple[str, ...]) -> str:
    shown = ", ".join(recipients[:MAX_NAMED])
    more = len(recipients) - MAX_NAMED
    return shown + (f" +{more}" if more > 0 else "")
