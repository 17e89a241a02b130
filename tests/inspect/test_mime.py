from __future__ import annotations

from email.message import EmailMessage

import pytest

from gateway.inspect import inspect_bytes
from gateway.inspect.mime import MAX_TEXT
from gateway.intake.data import normalise_line_endings
from gateway.types import MessageFacts
from tests.inspect.fixtures import PDF, png


def inspect_message(raw: bytes) -> MessageFacts:
    """The facts of a message as the intake would have written it (CRLF)."""
    return inspect_bytes(normalise_line_endings(raw))


def letter(body: str = "Bonjour,\nvoici vos résultats.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Dr Anne Martin <Anne.Martin@Cabinet-Exemple.fr>"
    message["To"] = "patient@gmail.com"
    message["Subject"] = "Résultats d'analyse [code:4821]"
    message.set_content(body)
    return message


def test_a_pdf_declared_as_text_plain_is_recognised_as_pdf_by_its_bytes() -> None:
    message = letter()
    message.add_attachment(PDF, maintype="text", subtype="plain", filename="notes.txt")
    facts = inspect_message(bytes(message))
    (attachment,) = facts.attachments
    assert attachment.declared_type == "text/plain"
    assert attachment.true_type == "application/pdf"
    assert attachment.filename == "notes.txt"
    assert attachment.size == len(PDF)


def test_a_disguised_pdf_adds_no_text_for_the_content_patterns() -> None:
    message = letter("court")
    message.add_attachment(PDF, maintype="text", subtype="plain", filename="notes.txt")
    assert "%PDF" not in inspect_message(bytes(message)).text


def test_the_header_from_address_is_collected_lower_cased() -> None:
    assert inspect_message(bytes(letter())).header_from == ("anne.martin@cabinet-exemple.fr",)


def test_the_subject_is_decoded() -> None:
    assert inspect_message(bytes(letter())).subject == "Résultats d'analyse [code:4821]"


def test_the_size_is_the_length_of_the_raw_message() -> None:
    raw = normalise_line_endings(bytes(letter()))
    assert inspect_message(raw).size == len(raw)


def test_a_plain_message_has_no_attachment_and_its_text_is_kept() -> None:
    facts = inspect_message(bytes(letter()))
    assert facts.attachments == ()
    assert "voici vos résultats" in facts.text


def test_html_parts_are_read_without_their_tags_scripts_or_entities() -> None:
    message = letter()
    message.add_alternative(
        "<html><head><style>p{}</style></head><body><p>N&eacute; le <b>12/03/1984</b></p>"
        "<script>var x = 1;</script></body></html>",
        subtype="html",
    )
    text = inspect_message(bytes(message)).text
    assert "Né le 12/03/1984" in text
    assert "<b>" not in text and "var x" not in text and "p{}" not in text


def test_attachments_are_found_at_any_depth_of_nested_multiparts() -> None:
    inner = EmailMessage()
    inner.set_content("texte")
    inner.add_related(png(), maintype="image", subtype="png", cid="<logo>")
    outer = letter()
    outer.add_attachment(PDF, maintype="application", subtype="pdf", filename="cr.pdf")
    outer.attach(inner)
    facts = inspect_message(bytes(outer))
    assert sorted(a.true_type for a in facts.attachments) == ["application/pdf", "image/png"]
    image = next(a for a in facts.attachments if a.true_type == "image/png")
    assert image.depth == 2
    assert image.inline


def test_an_inline_image_without_a_filename_counts_as_an_attachment() -> None:
    message = letter()
    message.add_related(png(), maintype="image", subtype="png", cid="<sig>")
    (attachment,) = inspect_message(bytes(message)).attachments
    assert attachment.filename is None and attachment.true_type == "image/png"


def test_an_attached_message_is_one_attachment_and_its_text_still_counts() -> None:
    forwarded = EmailMessage()
    forwarded["Subject"] = "compte rendu"
    forwarded.set_content("Patient né le 01/02/1950")
    forwarded.add_attachment(PDF, maintype="application", subtype="pdf", filename="cr.pdf")
    message = letter()
    message.add_attachment(forwarded)
    facts = inspect_message(bytes(message))
    (attachment,) = facts.attachments
    assert attachment.declared_type == "message/rfc822"
    assert attachment.true_type == "message/rfc822"
    assert attachment.size > len(PDF)
    assert "né le 01/02/1950" in facts.text


@pytest.mark.parametrize(
    ("maintype", "subtype", "data"),
    [
        ("application", "ms-tnef", b"\x78\x9f\x3e\x22" + b"\x00" * 32),
        ("text", "calendar", b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"),
    ],
)
def test_tnef_and_calendar_parts_are_attachments(maintype: str, subtype: str, data: bytes) -> None:
    message = letter()
    message.add_attachment(data, maintype=maintype, subtype=subtype)
    (attachment,) = inspect_message(bytes(message)).attachments
    assert attachment.declared_type == f"{maintype}/{subtype}"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \x80\x81",
        b"From: <<<@@@>>>\r\nSubject: =?utf-8?B?####?=\r\n\r\nbody",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!notbase64\r\n--x",
        b"Content-Type: text/plain; charset=no-such-charset\r\n\r\ncaf\xe9",
        b"Content-Type: message/rfc822\r\n\r\nnot really a message",
        b"From: a@b.fr\r\nContent-Type: multipart/mixed\r\n\r\nno boundary at all",
    ],
)
def test_a_malformed_message_does_not_raise(raw: bytes) -> None:
    facts = inspect_message(raw)
    assert facts.size == len(raw)


def test_a_from_header_that_is_not_an_address_list_gives_no_sender() -> None:
    """Guessing would let readers disagree (the From: check refuses such a message)."""
    raw = b"From: Dr =?bogus?Q?X?= <dr@cabinet.fr>, ,, @@\r\nSubject: x\r\n\r\nbody"
    assert inspect_message(raw).header_from == ()
    fine = b"From: Dr =?bogus?Q?X?= <dr@cabinet.fr>, ,\r\nSubject: x\r\n\r\nbody"
    assert inspect_message(fine).header_from == ("dr@cabinet.fr",)


def test_the_text_kept_for_patterns_is_bounded() -> None:
    message = letter("x" * (MAX_TEXT + 1000))
    assert len(inspect_message(bytes(message)).text) <= MAX_TEXT
