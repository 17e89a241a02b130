from __future__ import annotations

from gateway.policy import block_reply
from gateway.types import BlockSettings, Decision, Decisions, RecipientGroup

BLOCK = Decision(
    "no-webmail",
    "block",
    block=BlockSettings("Envoyez-le depuis l'adresse du cabinet.", "Send it from the practice's address."),
)
PASS = Decision("colleagues", "pass")


def test_nothing_blocked_gives_no_reply() -> None:
    assert block_reply(Decisions((RecipientGroup(PASS, ("a@b.fr",)),))) is None


def test_a_block_gives_550_5_7_1_with_french_then_english() -> None:
    reply = block_reply(Decisions((RecipientGroup(BLOCK, ("p@gmail.com",)),)), utf8=True)
    assert reply == (
        "550 5.7.1 Envoyez-le depuis l'adresse du cabinet. / Send it from the practice's address."
    )


def test_recipients_are_named_when_only_some_caused_the_block() -> None:
    decisions = Decisions(
        (RecipientGroup(PASS, ("a@cabinet.fr",)), RecipientGroup(BLOCK, ("p@gmail.com", "q@gmail.com")))
    )
    reply = block_reply(decisions, utf8=True)
    assert reply is not None
    assert "(destinataires concernés : p@gmail.com, q@gmail.com)" in reply
    assert "(recipients concerned: p@gmail.com, q@gmail.com)" in reply
    assert "a@cabinet.fr" not in reply


def test_the_reply_is_one_ascii_line_unless_utf8_is_allowed() -> None:
    decision = Decision("x", "block", block=BlockSettings("Refusé :\nl’adresse « perso »…", "Refused."))
    reply = block_reply(Decisions((RecipientGroup(decision, ("p@gmail.com",)),)))
    assert reply == "550 5.7.1 Refuse : l'adresse \" perso \"... / Refused."
