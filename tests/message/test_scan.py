"""The MIME structure, found by scanning for boundaries: byte ranges of each part, and
the decisions the standard library's parser takes at the edges, made the same way."""

from __future__ import annotations

from gateway.message.model import Message


def structure(raw: bytes) -> list[tuple[int, str, str]]:
    message = Message.from_bytes(raw)
    return [(p.depth, p.kind, p.content_type) for p in message.root.walk()]


def test_parts_are_byte_ranges_and_the_line_break_before_a_boundary_is_the_boundarys() -> None:
    raw = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\npreamble\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\nun\r\n"
           b"--b\r\n\r\ndeux\r\n\r\n--b--\r\nepilogue\r\n")
    message = Message.from_bytes(raw)
    first, second = message.root.children
    assert message.raw(first.body, first.end) == b"un"
    assert message.raw(second.body, second.end) == b"deux\r\n"  # its own last line break
    assert second.content_type == "text/plain" and second.header.fields == ()


def test_a_line_of_an_enclosing_boundary_ends_the_inner_part_too() -> None:
    raw = (b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
           b'--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
           b"--inner\r\n\r\ntexte\r\n"
           b"--outer\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--outer--\r\n")
    assert structure(raw) == [(0, "multipart", "multipart/mixed"),
                              (1, "multipart", "multipart/alternative"),
                              (2, "leaf", "text/plain"), (1, "leaf", "application/pdf")]


def test_boundary_lines_in_a_row_make_no_empty_parts() -> None:
    raw = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\n--b\r\n\r\nun\r\n--b--\r\n")
    assert structure(raw) == [(0, "multipart", "multipart/mixed"), (1, "leaf", "text/plain")]


def test_a_boundary_that_is_only_a_prefix_of_a_line_is_not_one() -> None:
    raw = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\n\r\n--bis not a boundary\r\n--b  \r\n\r\ndeux\r\n--b--")
    message = Message.from_bytes(raw)
    first, second = message.root.children
    assert message.raw(first.body, first.end) == b"--bis not a boundary"
    assert message.raw(second.body, second.end) == b"deux"


def test_a_multipart_without_boundary_lines_is_one_leaf_and_says_why() -> None:
    message = Message.from_bytes(b'Content-Type: multipart/mixed; boundary="b"\r\n\r\ntext\r\n')
    assert message.root.kind == "leaf"
    assert "no boundary line in a multipart" in message.root.problems


def test_a_forwarded_message_is_scanned_inside_and_delivery_reports_stay_whole() -> None:
    raw = (b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
           b"--r\r\nContent-Type: text/plain\r\n\r\nNon remis\r\n"
           b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
           b"Final-Recipient: rfc822; a@b.fr\r\n"
           b"--r\r\nContent-Type: message/rfc822\r\n\r\nSubject: origine\r\n\r\ncorps\r\n"
           b"--r--\r\n")
    assert structure(raw) == [(0, "multipart", "multipart/report"), (1, "leaf", "text/plain"),
                              (1, "leaf", "message/delivery-status"),
                              (1, "message", "message/rfc822"), (2, "leaf", "text/plain")]


def test_a_part_without_a_type_is_text_and_in_a_digest_a_message() -> None:
    raw = (b'Content-Type: multipart/digest; boundary="d"\r\n\r\n'
           b"--d\r\n\r\nSubject: un\r\n\r\nun\r\n--d--\r\n")
    assert structure(raw) == [(0, "multipart", "multipart/digest"),
                              (1, "message", "message/rfc822"), (2, "leaf", "text/plain")]


def test_nesting_beyond_the_limit_stays_whole_as_one_leaf() -> None:
    raw = b""
    for n in range(40):
        raw += f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n'.encode()
    raw += b"\r\nfin\r\n"
    message = Message.from_bytes(raw)
    deepest = list(message.root.walk())[-1]
    assert deepest.depth == 32 and deepest.kind == "leaf"
    assert b"fin" in message.raw(deepest.body, deepest.end)
