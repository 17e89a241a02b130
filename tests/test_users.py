"""The users file: password hashes, the store that re-reads it, the login cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.errors import ConfigError
from gateway.users import User, UserStore, hash_password, save_users, verify_password


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


def test_a_user_may_send_as_its_own_addresses_only() -> None:
    user = User("martin", hash_password("abcdefghijk"), ("dr.martin@cabinet-martin.fr",))
    assert user.may_send_as("Dr.Martin@Cabinet-Martin.FR")
    assert not user.may_send_as("dr.durand@cabinet-martin.fr")
    assert not user.may_send_as("dr.martin@cabinet-martin.fr.example")
