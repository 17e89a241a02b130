"""Small pure pieces of the intake."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.intake.data import normalise_line_endings
from gateway.intake.limits import SessionLimits
from gateway.intake.smtp import with_enhanced_status


def test_builtin_replies_get_an_enhanced_status_by_their_code() -> None:
    assert with_enhanced_status("250 OK") == "250 2.0.0 OK"
    assert with_enhanced_status("503 Error: need MAIL command") == "503 5.5.1 Give MAIL FROM first"
    assert with_enhanced_status("500 Error: command \"X\" not recognized").startswith("500 5.5.2")
    assert with_enhanced_status("552 Error: Too much mail data").startswith("552 5.3.4")


def test_replies_that_already_carry_a_status_are_left_alone() -> None:
    assert with_enhanced_status("550 5.7.1 No") == "550 5.7.1 No"


def test_intermediate_replies_are_not_touched() -> None:
    assert with_enhanced_status("354 End data with <CR><LF>.<CR><LF>").startswith("354 End")


@given(st.binary(max_size=300))
def test_after_normalising_every_cr_and_lf_is_part_of_a_crlf(data: bytes) -> None:
    out = normalise_line_endings(data)
    assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")
    assert out.replace(b"\r\n", b"") == data.replace(b"\r\n", b"").replace(b"\r", b"").replace(
        b"\n", b"")


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["10.0.0.1", "10.0.0.2", "::1"])),
                max_size=60))
def test_session_limits_count_what_is_open_and_never_more(steps: list[tuple[bool, str]]) -> None:
    """Any order of connections and disconnections: admitted sessions stay within both
    limits, and a closed one frees its place."""
    limits = SessionLimits(total=5, per_client=2, login_timeout=60)
    open_now: dict[str, int] = {}
    for connect, client in steps:
        if connect:
            refused = limits.admit(client)
            if refused is None:
                open_now[client] = open_now.get(client, 0) + 1
            else:
                assert (refused == "total" and sum(open_now.values()) == 5) or \
                    (refused == "client" and open_now.get(client, 0) == 2)
        elif open_now.get(client):
            limits.leave(client)
            open_now[client] -= 1
        assert limits.open == sum(open_now.values()) <= 5
        assert all(n <= 2 for n in open_now.values())
