"""Transfer encodings undone in windows give the same bytes as undone whole."""

from __future__ import annotations

import base64
import binascii
import quopri

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.message import decode
from gateway.message.model import BytesSource


def decoded(data: bytes, cte: str) -> bytes:
    return b"".join(decode.decoded(BytesSource(data), 0, len(data), cte))


@pytest.fixture
def tiny_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "WINDOW", 7)  # every boundary case, in small messages


@settings(max_examples=300)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=90))
def test_base64_in_windows_is_base64_whole(data: bytes, line: int) -> None:
    text = base64.b64encode(data)
    wrapped = b"\r\n".join(text[i:i + line] for i in range(0, len(text), line)) + b"\r\n"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode, "WINDOW", 7)
        assert decoded(wrapped, "base64") == data
        assert decode.decoded_size(BytesSource(wrapped), 0, len(wrapped), "base64") == len(data)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_quoted_printable_in_windows_is_quoted_printable_whole(data: bytes) -> None:
    text = quopri.encodestring(data).replace(b"\n", b"\r\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode, "WINDOW", 7)
        assert decoded(text, "quoted-printable") == binascii.a2b_qp(text)


def test_uuencode_is_read_between_begin_and_end(tiny_windows: None) -> None:
    data = bytes(range(256)) * 3
    body = b"begin 644 scan.bin\r\n" + b"".join(
        binascii.b2a_uu(data[i:i + 45]).replace(b"\n", b"\r\n")
        for i in range(0, len(data), 45)) + b"`\r\nend\r\n"
    assert decoded(body, "x-uuencode") == data


def test_an_identity_encoding_gives_the_bytes_as_they_are(tiny_windows: None) -> None:
    assert decoded(b"caf\xe9\r\n.\r\n", "8bit") == b"caf\xe9\r\n.\r\n"
    assert decoded(b"", "7bit") == b""


def test_one_line_longer_than_a_window_is_decoded_in_bounded_pieces(tiny_windows: None) -> None:
    data = bytes(range(256)) * 4
    one_line = base64.b64encode(data)  # no line break at all
    assert decoded(one_line, "base64") == data
    qp = quopri.encodestring(data, quotetabs=True).replace(b"=\n", b"")  # one long line
    assert decoded(qp, "quoted-printable") == binascii.a2b_qp(qp)
