"""The intake's checks of the envelope, each with its reply: at most 100 recipients a
message (452 4.5.3, as Postfix's smtpd_recipient_limit), a recipient that is a full
address (553 5.1.3), and an account removed while its session is open (530 5.7.0)."""

from __future__ import annotations

import time

from gateway.users import load_users, save_users
from tests.support import (
    ADDRESS,
    OTHER_ADDRESS,
    OTHER_PASSWORD,
    OTHER_USER,
    PASSWORD,
    USER,
    Gateway,
    RawSmtp,
    RunningApp,
)


def _session(gw: Gateway, user: str = USER, password: str = PASSWORD) -> RawSmtp:
    session = RawSmtp(gw.submission_port)
    session.starttls(gw.client_context())
    assert session.login(user, password)[0] == 235
    return session


def test_the_hundred_and_first_recipient_is_refused_with_452_4_5_3(
        gw: Gateway, pli: RunningApp) -> None:
    with _session(gw) as session:
        assert session.say(f"MAIL FROM:<{ADDRESS}>")[0] == 250
        for n in range(100):
            assert session.say(f"RCPT TO:<patient{n}@example.org>")[0] == 250, n
        code, text = session.say("RCPT TO:<patient100@example.org>")
    assert code == 452 and text.startswith(b"4.5.3 Trop de destinataires"), text
    assert b"send to at most 100 at a time" in text


def test_a_recipient_without_a_domain_is_refused_with_553_5_1_3(
        gw: Gateway, pli: RunningApp) -> None:
    with _session(gw) as session:
        assert session.say(f"MAIL FROM:<{ADDRESS}>")[0] == 250
        code, text = session.say("RCPT TO:<patient>")
        assert code == 553 and text.startswith(b"5.1.3 Un destinataire doit"), text
        assert b"A recipient must be a full address (name@domain)" in text
        assert session.say("RCPT TO:<patient@example.org>")[0] == 250  # the session goes on


def test_an_account_removed_during_its_session_can_no_longer_send(
        gw: Gateway, pli: RunningApp) -> None:
    with _session(gw, OTHER_USER, OTHER_PASSWORD) as session:
        users = load_users(gw.folder / "users.toml")
        del users[OTHER_USER]
        time.sleep(1.1)  # a new modification time, so the server reads the file again
        save_users(gw.folder / "users.toml", users)
        code, text = session.say(f"MAIL FROM:<{OTHER_ADDRESS}>")
    assert code == 530 and text.startswith(b"5.7.0 Votre compte n'existe plus"), text
    assert b"Your account is no longer valid on this server" in text
