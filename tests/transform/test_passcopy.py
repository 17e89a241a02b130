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


def test_a_missing_date_and_message_id_are_added_at_the_end_of_the_header() -> None:
    original = msg("From: a@cab.fr", "To: b@cab.fr", "Subject: Ordonnance")
    out = pass_copy(original, TAGS, hostname="pli.cab.fr")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"From: a@cab.fr\r\nTo: b@cab.fr\r\nSubject: Ordonnance\r\nDate: ")
    assert body == b"Bonjour\r\n"
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Date"].datetime.tzinfo is not None
    assert parsed["Message-ID"].endswith("@pli.cab.fr>")
    # One that has both, as every mail client writes it, still goes byte for byte.
    complete = msg("From: a@cab.fr", "Date: Mon, 02 Jun 2025 09:00:00 +0200",
                   "message-id: <1@cab.fr>", "Subject: Ordonnance")
    assert pass_copy(complete, TAGS, hostname="pli.cab.fr") is complete
    # Only the one missing is added.
    no_id = msg("From: a@cab.fr", "Date: Mon, 02 Jun 2025 09:00:00 +0200")
    added = pass_copy(no_id, TAGS, hostname="pli.cab.fr")
    assert added.count(b"Date: ") == 1 and b"Message-ID: <" in added
