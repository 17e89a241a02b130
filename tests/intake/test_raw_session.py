"""What a mail library would not send, sent as raw bytes over loopback: the replies Pli
gives to an empty sender, a foreign authorization identity, control characters and a
STARTTLS left half-way."""

from __future__ import annotations

import base64

from structlog.testing import capture_logs

from tests.support import (
    ADDRESS,
    OTHER_ADDRESS,
    OTHER_USER,
    PASSWORD,
    USER,
    Gateway,
    RawSmtp,
    RunningApp,
    wait_until,
)


def logged_in(gw: Gateway) -> RawSmtp:
    session = RawSmtp(gw.submission_port)
    session.starttls(gw.client_context())
    assert session.login(USER, PASSWORD)[0] == 235
    return session


def test_an_empty_sender_gets_the_sentence_written_for_it(gw: Gateway, pli: RunningApp) -> None:
    with logged_in(gw) as session:
        code, text = session.say("MAIL FROM:<>")
    assert code == 550
    assert text == (b"5.7.1 Un expediteur vide (<>) ne peut pas envoyer / "
                    b"An empty sender (<>) cannot be used to submit mail")


def plain(authzid: str, login: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"{authzid}\0{login}\0{password}".encode()).decode()


def test_auth_plain_acting_as_another_user_fails_and_logs_nobody_in(
        gw: Gateway, pli: RunningApp) -> None:
    """RFC 4616: an authorization identity other than the login must fail, since Pli
    lets no user act for another; the same name as the login is no proxying."""
    with RawSmtp(gw.submission_port) as session, capture_logs() as logs:
        session.starttls(gw.client_context())
        code, text = session.say(plain(OTHER_USER, USER, PASSWORD))
        assert code == 535 and text.startswith(b"5.7.8 ")
        assert b" / " in text and b"another user" in text
        assert session.say(f"MAIL FROM:<{ADDRESS}>")[0] == 530  # still not logged in
        assert session.say(f"MAIL FROM:<{OTHER_ADDRESS}>")[0] == 530
        assert session.say(plain(USER, USER, PASSWORD))[0] == 235
        assert session.say(f"MAIL FROM:<{ADDRESS}>")[0] == 250
    failed = [e for e in logs if e["event"] == "session.auth_failed"]
    assert len(failed) == 1 and failed[0]["client"] == "127.0.0.1"
    assert OTHER_USER not in str(failed) and PASSWORD not in str(logs)


def printable(text: bytes) -> bool:
    return all(0x20 <= byte <= 0x7E for byte in text.replace(b"\n", b""))


def test_an_unknown_command_is_quoted_in_printable_ascii_only(
        gw: Gateway, pli: RunningApp) -> None:
    with RawSmtp(gw.submission_port) as session:
        session.starttls(gw.client_context())
        code, text = session.say(b"\x00MAIL FROM:<dr.martin@cabinet-martin.fr>")
        assert code == 500 and text.startswith(b"5.5.2 ") and printable(text), text
        assert b'"?MAIL"' in text and b" / " in text
        code, text = session.say(b"MA\x1bIL\x7f")
        assert code == 500 and printable(text) and b'"MA?IL?"' in text, text
        assert session.say("NOOP")[0] == 250


def test_no_reply_carries_control_characters_or_undecodable_bytes(
        gw: Gateway, pli: RunningApp) -> None:
    """Whatever a reply quotes from the client is flattened to printable ASCII, and
    bytes that are not UTF-8 never make the reply itself fail."""
    with logged_in(gw) as session, capture_logs() as logs:
        for command in (b"VRFY <a@b@c>\x00", b"VRFY <a@b@c>\xff"):
            code, text = session.say(command)
            assert code == 502 and text.startswith(b"5.5.1 ") and printable(text), text
        assert session.say("NOOP")[0] == 250
    assert not [e for e in logs if e["event"] == "session.internal_error"]


def test_a_starttls_left_without_a_handshake_is_an_ordinary_event_with_the_client_address(
        gw: Gateway, pli: RunningApp) -> None:
    with capture_logs() as logs:
        with RawSmtp(gw.submission_port) as session:
            assert session.say("EHLO [192.0.2.1]")[0] == 250
            assert session.say("STARTTLS")[0] == 220
        with RawSmtp(gw.submission_port) as session:  # talks on in clear instead
            assert session.say("EHLO [192.0.2.1]")[0] == 250
            assert session.say("STARTTLS")[0] == 220
            session.sock.sendall(b"MAIL FROM:<dr.martin@cabinet-martin.fr>\r\n")
            answer = b""  # at most a TLS alert, then the server closes the connection
            while chunk := session.sock.recv(1024):
                answer += chunk
            assert b"250" not in answer and b"Sender" not in answer
        wait_until(lambda: len([e for e in logs if e["event"] == "session.tls_failed"]) == 2)
    events = [e for e in logs if e["event"] == "session.tls_failed"]
    assert all(e["client"] == "127.0.0.1" and e["log_level"] == "info" for e in events)
    assert events[0]["reason"] == "ConnectionResetError"  # closed: no TLS at all
    assert events[1]["reason"].isupper()  # OpenSSL's words, e.g. WRONG_VERSION_NUMBER
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
