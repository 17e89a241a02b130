"""The passed copy keeps the original, less Pli's subject tags and any Bcc header."""

from __future__ import annotations

import email
import email.policy

from gateway.transform.passcopy import pass_copy

TAGS = frozenset({"code", "clair"})


def msg(*headers: str, body: str = "Bonjour\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def test_a_message_without_tags_or_bcc_is_passed_byte_for_byte() -> None:
    original = msg("From: a@cab.fr", "To: b@cab.fr", "Subject: Compte rendu [urgent]")
    assert pass_copy(original, TAGS) is original


def test_the_access_code_tag_never_reaches_the_colleagues() -> None:
    out = pass_copy(msg("From: a@cab.fr", "Subject: =?utf-8?q?R=C3=A9sultats?= [code:4821]",
                        "To: b@cab.fr"), TAGS)
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Subject"] == "Résultats"
    assert b"4821" not in out
    assert parsed["To"] == "b@cab.fr" and out.endswith(b"\r\n\r\nBonjour\r\n")


def test_a_folded_subject_and_a_bcc_header_are_handled_whole() -> None:
    out = pass_copy(msg("From: a@cab.fr", "Bcc: secret@cab.fr,", " other@cab.fr",
                        "Subject: Bilan [clair]", " de contrôle", "To: b@cab.fr"), TAGS)
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert "Bcc" not in parsed and b"secret@" not in out and b"other@" not in out
    assert parsed["Subject"] == "Bilan de contrôle"
    assert parsed["To"] == "b@cab.fr"


def test_a_message_of_header_fields_only_loses_its_bcc_and_tags_too() -> None:
    raw = b"From: a@cab.fr\r\nBcc: x@cab.fr\r\nSubject: Bilan [code:4821]\r\n"
    out = pass_copy(raw, TAGS)
    assert b"x@cab.fr" not in out and b"4821" not in out
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["From"] == "a@cab.fr" and parsed["Subject"] == "Bilan"
    plain = b"From: a@cab.fr\r\nSubject: Bilan\r\n"
    assert pass_copy(plain, TAGS) is plain
