"""`session_timeout`: the silence allowed from a client, the DATA transfer included; a
client that keeps sending is never cut off, however long its upload takes."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.intake.test_submission import message
from tests.support import (
    ADDRESS,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    Provider,
    RawSmtp,
    RunningApp,
    make_gateway,
)

TIMEOUT = 1.0


@pytest.fixture
def quick(tmp_path: Path, loop: LoopThread) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path / "pli")
    config = gw.config.read_text()
    assert "\nsession_timeout = 600 " in config
    gw.config.write_text(config.replace("\nsession_timeout = 600 ",
                                        f"\nsession_timeout = {TIMEOUT} "))
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    app = RunningApp(loop, gw).start()
    try:
        yield gw
    finally:
        app.stop()
        provider.stop()


def _session(gw: Gateway) -> RawSmtp:
    session = RawSmtp(gw.submission_port)
    session.starttls(gw.client_context())
    assert session.login(USER, PASSWORD)[0] == 235
    assert session.say(f"MAIL FROM:<{ADDRESS}>")[0] == 250
    assert session.say("RCPT TO:<dr.durand@cabinet-martin.fr>")[0] == 250
    return session


def _closed(session: RawSmtp, within: float) -> bool:
    """True if the server closes the connection (after a last reply or not) in time."""
    session.sock.settimeout(within)
    try:
        while session.reader.readline():
            pass
    except TimeoutError:
        return False
    except (ssl.SSLError, ConnectionError):  # closed without TLS's goodbye
        return True
    return True


def test_a_client_silent_longer_than_the_timeout_is_closed(quick: Gateway) -> None:
    with _session(quick) as session:
        time.sleep(TIMEOUT + 0.5)
        assert _closed(session, within=5)


def test_silence_in_the_middle_of_data_counts_too(quick: Gateway) -> None:
    with _session(quick) as session:
        assert session.say("DATA")[0] == 354
        session.sock.sendall(message(to="dr.durand@cabinet-martin.fr")[:200])
        time.sleep(TIMEOUT + 0.5)
        assert _closed(session, within=5)


def test_an_upload_longer_than_the_timeout_that_keeps_sending_is_taken(
        quick: Gateway) -> None:
    """During DATA the timer starts again with each 64 KiB read (the intake reads DATA in
    pieces of that size): pieces of 80 KiB, each sent within the timeout."""
    data = message(to="dr.durand@cabinet-martin.fr", body="ligne de texte\n" * 30_000)
    size = 80 * 1024
    pieces = [data[n:n + size] for n in range(0, len(data), size)]
    assert len(pieces) >= 5
    with _session(quick) as session:
        assert session.say("DATA")[0] == 354
        started = time.monotonic()
        for piece in pieces:
            session.sock.sendall(piece)
            time.sleep(TIMEOUT / 2)
        assert time.monotonic() - started > 2 * TIMEOUT
        code, text = session.say(b".")
        assert code == 250, text
