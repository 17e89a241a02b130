"""deploy/fail2ban/pli.conf matches the failed-login lines Pli really writes: those of a
real `pli run`, and those the real logging set-up renders in any key order."""

from __future__ import annotations

import base64
import configparser
import itertools
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway import logs
from tests.support import HOST, USER, PliProcess, make_gateway

FILTER = Path(__file__).resolve().parents[2] / "deploy" / "fail2ban" / "pli.conf"
# fail2ban puts its own address pattern in place of <HOST>; this one stands in for it.
HOST_PATTERN = r"(?P<host>(?:\d{1,3}\.){3}\d{1,3}|[0-9a-fA-F:]+)"


def failregexes() -> list[re.Pattern[str]]:
    """Every line of ``failregex``, as fail2ban reads the file (one pattern a line)."""
    parser = configparser.RawConfigParser()
    parser.read_string(FILTER.read_text())
    lines = [line.strip() for line in parser["Definition"]["failregex"].splitlines()]
    return [re.compile(line.replace("<HOST>", HOST_PATTERN)) for line in lines if line]


def banned_host(line: str) -> str | None:
    for regex in failregexes():
        match = regex.search(line)
        if match:
            return match.group("host")
    return None


@pytest.fixture
def restored_logs() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_the_filter_bans_the_address_in_a_real_pli_run_log(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    pli = PliProcess(gw, tmp_path / "pli.log").start()
    try:
        with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
            client.starttls(context=gw.client_context())
            client.ehlo()
            blob = base64.b64encode(f"\0{USER}\0wrong password".encode()).decode()
            assert client.docmd("AUTH", f"PLAIN {blob}")[0] == 535
    finally:
        pli.kill()
    lines = pli.log().splitlines()
    failed = [line for line in lines if '"session.auth_failed"' in line]
    assert len(failed) == 1, lines
    assert banned_host(failed[0]) == "127.0.0.1"
    assert [line for line in lines if banned_host(line)] == failed  # nothing else is banned


def test_the_filter_matches_the_rendered_line_whatever_the_order_of_its_keys(
        restored_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    """The real processor chain renders the event with its fields given in every order,
    bound beforehand or not; each line bans the client, and a successful login none."""
    logs.configure(json=True)
    fields = {"client": "192.0.2.7", "mechanism": "PLAIN", "reason": "authorization identity"}
    for order in itertools.permutations(fields):
        kwargs = {key: fields[key] for key in order}
        logs.get_logger("pli.intake").warning("session.auth_failed", **kwargs)
        logs.get_logger("pli.intake").bind(**kwargs).warning("session.auth_failed")
    logs.get_logger("pli.intake").info("session.authenticated", client="192.0.2.8",
                                       user="martin", mechanism="PLAIN")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 6 + 1
    assert [banned_host(line) for line in lines[:-1]] == ["192.0.2.7"] * 12
    assert banned_host(lines[-1]) is None


@pytest.mark.parametrize("line", [
    '{"event": "session.auth_failed", "client": "192.0.2.7", "mechanism": "PLAIN"}',
    '{"mechanism": "PLAIN", "client": "192.0.2.7", "level": "warning", '
    '"event": "session.auth_failed"}',
    '{"client": "192.0.2.7", "event": "session.auth_failed"}',
])
def test_either_order_of_event_and_client_is_banned(line: str) -> None:
    assert banned_host(line) == "192.0.2.7"


@pytest.mark.parametrize("line", [
    '{"event": "session.auth_failed_elsewhere", "client": "192.0.2.7"}',
    '{"event": "session.authenticated", "client": "192.0.2.7"}',
    '{"event": "session.auth_locked", "client": "192.0.2.7"}',
])
def test_other_events_are_not_banned(line: str) -> None:
    assert banned_host(line) is None
