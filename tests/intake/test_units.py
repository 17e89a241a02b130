"""Small pure pieces of the intake and users file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.intake.data import normalise_line_endings
from gateway.intake.limits import SessionLimits
from gateway.intake.smtp import with_enhanced_status
from gateway.users import User, UserStore, hash_password, save_users, verify_password


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


def test_password_hashes_verify_only_the_right_password() -> None:
    stored = hash_password("un mot de passe")
    assert stored.startswith("scrypt$")
    assert verify_password("un mot de passe", stored)
    assert not verify_password("un autre", stored)
    assert not verify_password("x", "garbage")


def test_the_store_sees_a_user_added_while_running(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    store = UserStore(path)
    assert store.get("martin") is None
    save_users(path, {"martin": User("martin", hash_password("abcdefghijk"), ("a@b.fr",))})
    assert store.authenticate("martin", "abcdefghijk") is not None
    assert store.authenticate("martin", "wrong") is None
    assert store.authenticate("nobody", "abcdefghijk") is None
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_remembered_login_skips_scrypt_but_never_a_wrong_or_changed_password(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import gateway.users as users_module

    path = tmp_path / "users.toml"
    save_users(path, {"martin": User("martin", hash_password("abcdefghijk"), ("a@b.fr",))})
    now = [0.0]
    store = UserStore(path, clock=lambda: now[0])
    calls = []
    real = users_module.verify_password
    monkeypatch.setattr(users_module, "verify_password",
                        lambda p, h: calls.append(p) or real(p, h))
    assert store.authenticate("martin", "abcdefghijk") is not None
    assert store.authenticate("martin", "abcdefghijk") is not None
    assert calls == ["abcdefghijk"]  # the second login came from the cache
    assert store.authenticate("martin", "wrong one") is None
    assert calls[-1] == "wrong one"  # a wrong password always gets the full check
    now[0] += UserStore.CACHE_TTL + 1
    assert store.authenticate("martin", "abcdefghijk") is not None
    assert len(calls) == 3  # expired: checked again
    save_users(path, {"martin": User("martin", hash_password("new password!"), ("a@b.fr",))})
    assert store.authenticate("martin", "abcdefghijk") is None  # changed in the file


def test_a_users_file_broken_while_running_keeps_the_last_good_users(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from gateway.errors import ConfigError

    path = tmp_path / "users.toml"
    path.write_text("[users.martin\n")  # as a hand edit can leave it
    with pytest.raises(ConfigError, match="users file"):
        UserStore(path).users()  # at start-up: refused, with the reason
    save_users(path, {"martin": User("martin", hash_password("abcdefghijk"), ("a@b.fr",))})
    store = UserStore(path)
    assert store.authenticate("martin", "abcdefghijk") is not None
    path.write_text(path.read_text() + "\n[users.bernard]\npassword = \n")
    with capture_logs() as logs:
        assert store.authenticate("martin", "abcdefghijk") is not None
        assert store.get("martin") is not None
    assert [e["event"] for e in logs] == ["users.reload_failed"]  # once, not per login
    assert "users.toml" in logs[0]["problem"]
    save_users(path, {"bernard": User("bernard", hash_password("0123456789a"), ("b@b.fr",))})
    assert store.get("martin") is None and store.get("bernard") is not None  # mended


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
