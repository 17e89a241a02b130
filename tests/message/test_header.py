"""The header block: read tolerantly, and every reading that receivers could disagree on
noted as a problem (a submitted message with one is refused)."""

from __future__ import annotations

from gateway.message.header import MAX_HEADER_BYTES, parse_header


def test_fields_are_read_in_order_folded_lines_joined() -> None:
    header = parse_header(b"From: a@b.fr\r\nSubject: Bilan\r\n de contr\xc3\xb4le\r\n\r\nbody")
    assert [f.name for f in header.fields] == ["From", "Subject"]
    assert header.get("subject") == "Bilan de contrôle"
    assert header.length == len(b"From: a@b.fr\r\nSubject: Bilan\r\n de contr\xc3\xb4le\r\n\r\n")
    assert header.problems == ()


def test_a_name_with_white_space_before_its_colon_is_still_read_and_noted() -> None:
    header = parse_header(b"From : <x@evil.example>\r\nX-Mailer : Outil\r\n\r\n")
    assert header.get("from") == "<x@evil.example>"
    assert header.get("x-mailer") == "Outil"
    assert header.problems == ("white space between the name From and its colon",)


def test_two_from_fields_are_a_problem_two_received_fields_are_not() -> None:
    header = parse_header(b"Received: a\r\nReceived: b\r\nFrom: a@b.fr\r\nFrom: c@d.fr\r\n\r\n")
    assert header.problems == ("two From fields",)


def test_a_line_that_is_not_a_field_ends_the_header_as_the_standard_library_reads_it() -> None:
    data = b"From: a@b.fr\r\nnot a field\r\nSubject: hidden\r\n\r\nbody"
    header = parse_header(data)
    assert header.problems == ("a line that is not a header field inside the header",)
    assert "subject" not in header and data[header.length:].startswith(b"not a field")


def test_a_line_of_white_space_only_is_a_problem() -> None:
    header = parse_header(b"From: a@b.fr\r\n \r\nSubject: x\r\n\r\n")
    assert "a line of white space only inside the header" in header.problems


def test_a_byte_order_mark_before_the_first_field_is_read_past() -> None:
    header = parse_header(b"\xef\xbb\xbfFrom: a@b.fr\r\n\r\nbody", top=True)
    assert header.bom and header.get("from") == "a@b.fr" and header.problems == ()


def test_raw_utf8_is_read_and_an_invalid_byte_never_reads_as_a_letter() -> None:
    header = parse_header("From: médecin <dr@cabinet-santé.fr>\r\n\r\n".encode()
                          + b"Subject: caf\xe9\r\n\r\n")
    assert header.get("from") == "médecin <dr@cabinet-santé.fr>"
    header = parse_header(b"From: dr@cabin\xe9t.fr\r\n\r\n")
    assert "\ufffd" in (header.get("from") or "")


def test_a_message_of_header_fields_only_and_one_with_no_header() -> None:
    only = parse_header(b"From: a@b.fr\r\nSubject: x\r\n")
    assert only.get("subject") == "x" and only.length == len(b"From: a@b.fr\r\nSubject: x\r\n")
    none = parse_header(b"\r\nbody")
    assert none.fields == () and none.length == 2


def test_a_header_longer_than_the_limit_is_a_problem() -> None:
    long = b"X-Long: " + b"a" * 80 + b"\r\n"
    data = long * (MAX_HEADER_BYTES // len(long) + 10)
    assert "longer than" in parse_header(data, truncated=True).problems[0]
