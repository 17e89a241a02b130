"""The intake over the wire: DATA streamed to a file, read by the rules of RFC 5321 and
Postfix 3.9, and the header refused when receivers could read it two ways."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.spool.helpers import stays
from tests.support import ADDRESS, HOST, PASSWORD, USER, Gateway, Provider, RunningApp, wait_until

COLLEAGUE = "dr.durand@cabinet-martin.fr"


def client(gw: Gateway) -> smtplib.SMTP:
    smtp = smtplib.SMTP(HOST, gw.submission_port, timeout=10)
    smtp.starttls(context=gw.client_context())
    smtp.login(USER, PASSWORD)
    return smtp


@contextlib.contextmanager
def raw_session(gw: Gateway) -> Iterator[ssl.SSLSocket]:
    """A logged-in session on a raw socket, for what smtplib will not send."""
    sock = socket.create_connection((HOST, gw.submission_port), timeout=10)
    with sock, sock.makefile("rb") as plain:
        assert plain.readline().startswith(b"220")
        sock.sendall(b"EHLO poste\r\n")
        while not plain.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\n")
        assert plain.readline().startswith(b"220")
        with gw.client_context().wrap_socket(sock, server_hostname="localhost") as tls, \
                tls.makefile("rb") as reader:
            tls.sendall(b"EHLO poste\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            login = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
            tls.sendall(b"AUTH PLAIN " + login + b"\r\n")
            assert reader.readline().startswith(b"235")
            tls.reader = reader  # type: ignore[attr-defined]
            yield tls


def reply(tls: ssl.SSLSocket) -> bytes:
    reader = tls.reader  # type: ignore[attr-defined]
    line = reader.readline()
    while line[3:4] == b"-":
        line = reader.readline()
    return bytes(line)


def incoming(gw: Gateway) -> list[str]:
    return [p.name for p in (gw.settings().spool_dir / "incoming").iterdir()]


def test_a_command_with_a_bare_line_feed_is_refused_and_never_read_as_two(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with raw_session(gw) as tls:
        tls.sendall(b"MAIL FROM:<" + ADDRESS.encode() + b">\nRCPT TO:<victim@example.org>\r\n")
        answer = reply(tls)
        assert answer.startswith(b"500 5.5.2") and b"LF" in answer
        assert reply(tls).startswith(b"221")  # the session ends: nothing more of it is read
        assert tls.recv(100) == b""
    stays(lambda: provider.received == [], 0.3)


def test_smuggled_commands_after_a_bare_lf_dot_stay_content_of_one_message(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with raw_session(gw) as tls:
        tls.sendall(f"MAIL FROM:<{ADDRESS}>\r\nRCPT TO:<{COLLEAGUE}>\r\nDATA\r\n".encode())
        assert reply(tls).startswith(b"250") and reply(tls).startswith(b"250")
        assert reply(tls).startswith(b"354")
        tls.sendall(f"From: {ADDRESS}\r\nSubject: un\r\n\r\nBonjour\n.\r\n"
                    f"MAIL FROM:<{ADDRESS}>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
                    "\r\nsmuggled\r\n.\r\n".encode())
        assert reply(tls).startswith(b"250 2.0.0 Queued")
    got = wait_until(lambda: provider.received)
    stays(lambda: len(provider.received) == 1, 0.5)
    assert got[0].rcpt_tos == [COLLEAGUE] and b"victim@example.org" in got[0].content


def test_a_nul_byte_is_refused_after_the_final_dot_and_nothing_is_kept(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with client(gw) as smtp:
        smtp.mail(ADDRESS)
        smtp.rcpt(COLLEAGUE)
        code, text = smtp.data(f"From: {ADDRESS}\r\nSubject: x\r\n\r\nun\0deux\r\n".encode())
        assert code == 550 and text.startswith(b"5.6.0") and b"NUL" in text
        assert smtp.noop()[0] == 250  # the session goes on
    assert incoming(gw) == [] and not any(gw.settings().spool_dir.glob("queue/*"))
    stays(lambda: provider.received == [], 0.3)


def test_past_size_the_rest_is_thrown_away_and_552_comes_after_the_final_dot(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    config = gw.settings()
    limit = config.max_message_size
    with client(gw) as smtp:
        smtp.mail(ADDRESS)
        smtp.rcpt(COLLEAGUE)
        big = f"From: {ADDRESS}\r\nSubject: x\r\n\r\n".encode() + (
            b"y" * 998 + b"\r\n") * (limit // 1000 + 10)
        code, text = smtp.data(big)
        assert code == 552 and text.startswith(b"5.3.4")
        assert smtp.noop()[0] == 250
    assert incoming(gw) == []
    stays(lambda: provider.received == [], 0.3)


@pytest.mark.parametrize("header", [
    b"From: <" + ADDRESS.encode() + b">\r\nFrom: <someone@example.org>\r\n",
    b"From : <someone@example.org>\r\nFrom: <" + ADDRESS.encode() + b">\r\n",
    b"From: <" + ADDRESS.encode() + b">\r\nnot a field\r\nFrom: <someone@example.org>\r\n",
])
def test_a_header_receivers_could_read_two_ways_is_refused(
        gw: Gateway, provider: Provider, pli: RunningApp, header: bytes) -> None:
    with client(gw) as smtp:
        smtp.mail(ADDRESS)
        smtp.rcpt(COLLEAGUE)
        code, text = smtp.data(header + b"Subject: x\r\n\r\nBonjour\r\n")
    assert code == 550 and text.startswith(b"5.6.0") and b"two ways" in text
    stays(lambda: provider.received == [], 0.3)


def test_a_long_line_never_leaves_pli_longer_than_998_octets(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    text = "Compte rendu détaillé, " * 200
    data = (f"From: {ADDRESS}\r\nTo: {COLLEAGUE}\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            f"\r\n{text}\r\n").encode()
    with client(gw) as smtp:
        smtp.sendmail(ADDRESS, [COLLEAGUE], data)
    got = wait_until(lambda: provider.received)[0].content
    assert max(len(line) for line in got.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    assert parsed.get_content().replace("\r\n", "\n") == text + "\n"


def test_dot_stuffed_lines_and_a_large_message_arrive_byte_for_byte(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    body = b"".join(b".line %d\r\n..twice\r\n.\r\n" % n for n in range(60_000))
    data = f"From: {ADDRESS}\r\nTo: {COLLEAGUE}\r\nSubject: x\r\n".encode() + \
        b"Date: Mon, 02 Jun 2025 09:00:00 +0200\r\nMessage-ID: <big@cabinet-martin.fr>\r\n\r\n" \
        + body
    with client(gw) as smtp:
        smtp.sendmail(ADDRESS, [COLLEAGUE], data)
    got = wait_until(lambda: provider.received, timeout=30)
    assert got[0].content == data


def test_pipelined_delivery_relays_to_every_recipient(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    provider.handler.pipelining = True
    provider.handler.rcpt_replies["gone@cabinet-martin.fr"] = "550 5.1.1 No such user"
    data = f"From: {ADDRESS}\r\nTo: {COLLEAGUE}\r\nSubject: x\r\n\r\nBonjour\r\n".encode()
    with client(gw) as smtp:
        smtp.sendmail(ADDRESS, [COLLEAGUE, "gone@cabinet-martin.fr", OTHER], data)
    got = wait_until(lambda: provider.received)
    assert got[0].rcpt_tos == [COLLEAGUE, OTHER]


OTHER = "dr.leroy@cabinet-martin.fr"


@pytest.mark.parametrize("recipient", [b"<a\x00b@cabinet-martin.fr>", b"<a\x01b@example.org>",
                                       b"<caf\xe9@example.org>"])
def test_a_recipient_with_a_control_character_or_unreadable_bytes_is_refused(
        gw: Gateway, provider: Provider, pli: RunningApp, recipient: bytes) -> None:
    with raw_session(gw) as tls:
        tls.sendall(f"MAIL FROM:<{ADDRESS}>\r\n".encode())
        assert reply(tls).startswith(b"250")
        tls.sendall(b"RCPT TO:" + recipient + b"\r\n")
        assert reply(tls).startswith(b"553 5.1.3")
