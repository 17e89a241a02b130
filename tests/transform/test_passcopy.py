"""The passed copy keeps the original, less Pli's subject tags and any Bcc header; it is
made of the original's bytes by reference, and never has a line over 998 octets."""

from __future__ import annotations

import base64
import email
import email.policy

from gateway.message.model import Message
from gateway.transform.passcopy import pass_copy
from gateway.types import ByteRange
from tests.support import body_bytes

TAGS = frozenset({"code", "clair"})


def copy(raw: bytes, tags: frozenset[str] = TAGS, hostname: str | None = None) -> bytes:
    message = Message.from_bytes(raw)
    return body_bytes(pass_copy(message, tags, hostname), message)


def unchanged(raw: bytes, hostname: str | None = None) -> bool:
    """The copy is the whole original, by reference: no byte of it rewritten."""
    message = Message.from_bytes(raw)
    return pass_copy(message, TAGS, hostname) == (ByteRange(0, len(raw)),)


def msg(*headers: str, body: str = "Bonjour\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def test_a_message_without_tags_or_bcc_is_passed_byte_for_byte() -> None:
    original = msg("From: a@cab.fr", "To: b@cab.fr", "Subject: Compte rendu [urgent]")
    assert unchanged(original)


def test_the_access_code_tag_never_reaches_the_colleagues() -> None:
    out = copy(msg("From: a@cab.fr", "Subject: =?utf-8?q?R=C3=A9sultats?= [code:4821]",
                        "To: b@cab.fr"))
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Subject"] == "Résultats"
    assert b"4821" not in out
    assert parsed["To"] == "b@cab.fr" and out.endswith(b"\r\n\r\nBonjour\r\n")


def test_a_folded_subject_and_a_bcc_header_are_handled_whole() -> None:
    out = copy(msg("From: a@cab.fr", "Bcc: secret@cab.fr,", " other@cab.fr",
                        "Subject: Bilan [clair]", " de contrôle", "To: b@cab.fr"))
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert "Bcc" not in parsed and b"secret@" not in out and b"other@" not in out
    assert parsed["Subject"] == "Bilan de contrôle"
    assert parsed["To"] == "b@cab.fr"


def test_a_message_of_header_fields_only_loses_its_bcc_and_tags_too() -> None:
    raw = b"From: a@cab.fr\r\nBcc: x@cab.fr\r\nSubject: Bilan [code:4821]\r\n"
    out = copy(raw)
    assert b"x@cab.fr" not in out and b"4821" not in out
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["From"] == "a@cab.fr" and parsed["Subject"] == "Bilan"
    plain = b"From: a@cab.fr\r\nSubject: Bilan\r\n"
    assert unchanged(plain)


def test_a_missing_date_and_message_id_are_added_at_the_end_of_the_header() -> None:
    original = msg("From: a@cab.fr", "To: b@cab.fr", "Subject: Ordonnance")
    out = copy(original, hostname="pli.cab.fr")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"From: a@cab.fr\r\nTo: b@cab.fr\r\nSubject: Ordonnance\r\nDate: ")
    assert body == b"Bonjour\r\n"
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Date"].datetime.tzinfo is not None
    assert parsed["Message-ID"].endswith("@pli.cab.fr>")
    # One that has both, as every mail client writes it, still goes byte for byte.
    complete = msg("From: a@cab.fr", "Date: Mon, 02 Jun 2025 09:00:00 +0200",
                   "message-id: <1@cab.fr>", "Subject: Ordonnance")
    assert unchanged(complete, hostname="pli.cab.fr")
    # Only the one missing is added.
    no_id = msg("From: a@cab.fr", "Date: Mon, 02 Jun 2025 09:00:00 +0200")
    added = copy(no_id, hostname="pli.cab.fr")
    assert added.count(b"Date: ") == 1 and b"Message-ID: <" in added


def test_a_long_header_line_is_folded_at_white_space() -> None:
    references = " ".join(f"<{n}-1234567890abcdef@cab.fr>" for n in range(60))
    raw = msg("From: a@cab.fr", f"References: {references}", "Subject: x")
    out = copy(raw)
    assert max(map(len, out.split(b"\r\n"))) <= 998
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert " ".join(parsed["References"].split()) == references


def test_a_long_text_line_is_sent_quoted_printable_and_reads_the_same() -> None:
    line = "Résultat " * 300
    raw = msg("From: a@cab.fr", "Subject: x", "MIME-Version: 1.0",
              "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit",
              body=line + "\r\nfin\r\n")
    out = copy(raw)
    assert max(map(len, out.split(b"\r\n"))) <= 998
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content() == line + "\r\nfin\r\n" or \
        parsed.get_content().replace("\r\n", "\n") == line + "\nfin\n"


def test_only_the_part_with_a_long_line_is_encoded_anew_in_a_multipart() -> None:
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 40
    encoded = base64.encodebytes(pdf).replace(b"\n", b"\r\n")
    long = b"x" * 2000
    raw = (b"From: a@cab.fr\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n'
           b"--b1\r\nContent-Type: text/plain\r\n\r\n" + long + b"\r\n"
           b"--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + encoded + b"--b1--\r\n")
    out = copy(raw)
    assert max(map(len, out.split(b"\r\n"))) <= 998
    assert encoded in out  # the other part, byte for byte
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    text, attachment = parsed.get_payload()
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert text.get_payload(decode=True).rstrip(b"\r\n") == long
    assert attachment.get_payload(decode=True) == pdf
