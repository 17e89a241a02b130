"""`pli run` as systemd runs it: a real process with $NOTIFY_SOCKET and $WATCHDOG_USEC.

READY=1 once the listeners accept, WATCHDOG=1 while healthy, RELOADING=1 then READY=1
around SIGHUP, STOPPING=1 at SIGTERM and a clean exit; with [metrics] configured,
/healthz and /metrics answer while it runs."""

from __future__ import annotations

import os
import re
import select
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ADDRESS, HOST, PASSWORD, USER, Gateway, free_port, make_gateway

ROOT = Path(__file__).resolve().parents[2]


class Notifications:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.seen: list[str] = []

    def wait_for(self, wanted: str, timeout: float = 20.0) -> list[str]:
        """Messages up to and including the first with a line ``wanted``."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if ready:
                message = self.sock.recv(4096).decode()
                got.append(message)
                self.seen.append(message)
                if wanted in message.split("\n"):
                    return got
        raise AssertionError(f"no {wanted} within {timeout}s; got {got}")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify")
    yield n
    n.sock.close()


def _gateway(tmp_path: Path) -> tuple[Gateway, int]:
    gw = make_gateway(tmp_path / "pli")
    text = gw.config.read_text().replace("port = 8080", f"port = {free_port()}")
    gw.config.write_text(text)
    # make_gateway gives each test gateway a metrics listener on a free port of its own.
    return gw, gw.settings().metrics.port


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_run_under_systemd_protocol(tmp_path: Path, notify: Notifications) -> None:
    gw, metrics_port = _gateway(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "pli.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(gw.config)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)
    log.close()
    try:
        notify.wait_for("READY=1")
        # Ready means ready: the listeners accept at once.
        with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
            client.starttls(context=gw.client_context())
            client.login(USER, PASSWORD)
            client.sendmail(ADDRESS, ["someone@example.org"],
                            f"From: {ADDRESS}\r\nTo: someone@example.org\r\nSubject: t\r\n\r\n"
                            "hello\r\n")
        notify.wait_for("WATCHDOG=1")
        notify.wait_for("WATCHDOG=1")
        assert _get(f"http://{HOST}:{metrics_port}/healthz") == (200, "ok\n")
        status, body = _get(f"http://{HOST}:{metrics_port}/metrics")
        assert status == 200
        # Every sample names its instance (pli.toml's `instance`, by default the host's).
        assert re.search(r'(?m)^pli_messages_decided_total\{instance="[^"]+",action="pass"\} 1$',
                         body), body
        proc.send_signal(signal.SIGHUP)
        reload = notify.wait_for("READY=1")
        assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in reload), reload
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = (tmp_path / "pli.log").read_text(errors="replace")
    assert "pli.stopped" in output, output[-3000:]
