"""Connections at once (in all, per client address) and the time allowed to log in, with
real sockets and smtplib over loopback."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.spool.helpers import message
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    Provider,
    RunningApp,
    make_gateway,
    wait_until,
)


@contextmanager
def gateway(tmp_path: Path, loop: LoopThread, **settings: float) -> Iterator[tuple[Gateway, Provider]]:
    gw = make_gateway(tmp_path / "pli")
    config = gw.config.read_text()
    for key, value in settings.items():
        line = next(x for x in config.splitlines() if x.startswith(f"{key} = "))
        config = config.replace(line, f"{key} = {value}", 1)
    gw.config.write_text(config)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    app = RunningApp(loop, gw).start()
    try:
        yield gw, provider
    finally:
        app.stop()
        provider.stop()


def greeting(gw: Gateway, stack: ExitStack) -> bytes:
    """Open a connection and return what the server says first."""
    sock = stack.enter_context(socket.create_connection((HOST, gw.submission_port), timeout=10))
    return sock.recv(1024)


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(1024):
        data += chunk
    return data


def send_one(gw: Gateway) -> None:
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        client.sendmail(ADDRESS, ["patient@example.org"], message())


@pytest.mark.parametrize("settings, words", [
    ({"max_sessions_per_client": 2}, b"Too many connections open from your address"),
    ({"max_sessions": 2}, b"The server has too many connections open"),
])
def test_a_connection_over_the_limit_hears_421_and_a_freed_place_is_taken_again(
        tmp_path: Path, loop: LoopThread, settings: dict[str, float], words: bytes) -> None:
    with gateway(tmp_path, loop, **settings) as (gw, provider), ExitStack() as held:
        assert greeting(gw, held).startswith(b"220 ")
        second = ExitStack()
        assert greeting(gw, second).startswith(b"220 ")
        with socket.create_connection((HOST, gw.submission_port), timeout=10) as third:
            refused = read_to_close(third)  # the server closes it after the reply
        assert refused.startswith(b"421 4.7.0 ") and words in refused, refused
        second.close()
        # The place the second connection held is free again, whoever takes it.
        wait_until(lambda: _sends(gw), timeout=10)
        wait_until(lambda: provider.received, timeout=10)


def _sends(gw: Gateway) -> bool:
    try:
        send_one(gw)
    except (smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected):
        return False  # 421: the server has not yet seen the other connection close
    return True


def test_a_client_that_does_not_log_in_in_time_is_told_and_closed(
        tmp_path: Path, loop: LoopThread) -> None:
    with gateway(tmp_path, loop, login_timeout=0.5) as (gw, provider):
        with socket.create_connection((HOST, gw.submission_port), timeout=10) as idle:
            assert idle.recv(1024).startswith(b"220 ")
            idle.sendall(b"EHLO [192.0.2.1]\r\n")
            time.sleep(0.1)
            said = read_to_close(idle)
        assert b"421 4.7.0 " in said and b"No login in time" in said, said
        # Keeping the connection busy without logging in does not buy more time.
        with socket.create_connection((HOST, gw.submission_port), timeout=10) as busy:
            started, said = time.monotonic(), busy.recv(1024)
            while b"421 " not in said and time.monotonic() - started < 5:
                busy.sendall(b"NOOP\r\n")
                said += busy.recv(1024)
                time.sleep(0.05)
            waited = time.monotonic() - started
        assert b"421 4.7.0 " in said and b"No login in time" in said, said
        assert waited < 2.5
        # Logged in in time, a client may then take as long as it needs.
        with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
            client.starttls(context=gw.client_context())
            client.login(USER, PASSWORD)
            time.sleep(1.0)
            client.sendmail(ADDRESS, ["patient@example.org"], message())
        wait_until(lambda: provider.received, timeout=10)
