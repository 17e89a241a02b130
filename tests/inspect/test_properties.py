"""Whatever bytes arrive, inspection returns facts and never raises."""

from __future__ import annotations

import email
import email.policy
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.inspect import inspect, inspect_bytes
from gateway.message.model import Message

HEADERS = st.sampled_from(
    [
        b"From: ", b"Subject: ", b"Content-Type: multipart/mixed; boundary=", b"--",
        b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Disposition: attachment; filename*=utf-8''%E9\r\n", b"=?utf-8?q?", b"\r\n",
        b"Content-Type: text/html; charset=x-unknown\r\n", b"<p>", b"&#xffffff;",
    ]
)  # fmt: skip
messages = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.one_of(HEADERS, st.binary(max_size=40)), max_size=40).map(b"".join),
)


@settings(max_examples=300)
@given(messages)
def test_inspection_never_raises_on_any_bytes(raw: bytes) -> None:
    facts = inspect_bytes(raw)
    assert facts.size == len(raw)
    assert all(a.size >= 0 and "/" in a.true_type for a in facts.attachments)


# Text a base64 part may hold: its alphabet, padding in any place, line breaks, spaces,
# characters outside the alphabet and 8-bit bytes.
BASE64_TEXT = st.lists(st.one_of(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            max_size=12),
    st.sampled_from(["=", "==", "\r\n", " ", "*", "-", "_", "\t", "é"]),
), max_size=30).map("".join)


def _decoded(raw: bytes) -> bytes:
    message = Message.from_bytes(raw)
    (leaf,) = inspect(message).leaves
    return b"".join(message.decoded(leaf.part))


@settings(max_examples=500)
@given(BASE64_TEXT)
def test_a_base64_part_decodes_as_the_email_package_decodes_it(text: str) -> None:
    """The same bytes as the email package, except that where the email package stops
    after padding in the middle, Pli goes on decoding what follows (so no reader ever
    sees more than the policy saw): the email package's bytes then begin Pli's."""
    raw = ("Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + text).encode("utf-8")
    ours = _decoded(raw)
    theirs = email.message_from_bytes(raw, policy=email.policy.default).get_payload(decode=True)
    alphabet = re.sub(r"[^A-Za-z0-9+/=]", "", text)
    if theirs == b"".join(raw.split(b"\r\n\r\n", 1)[1].splitlines()) and alphabet:
        return  # the email package could not decode it and handed back the text itself
    assert ours.startswith(theirs)
    if "=" not in alphabet.rstrip("="):
        assert ours == theirs
