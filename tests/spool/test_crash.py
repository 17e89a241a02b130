"""A real `pli run` process killed or stopped: what was acknowledged with 250 is on disk and
is delivered once, whatever happens to the process."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.spool.helpers import PATIENT, queued, stays, submit, wait_queue_empty
from tests.support import (
    ADDRESS,
    Gateway,
    LoopThread,
    PliProcess,
    Provider,
    make_gateway,
    wait_until,
)


@pytest.fixture
def processes() -> Iterator[list[PliProcess]]:
    """Every `pli run` a test starts; any still running at the end is killed."""
    started: list[PliProcess] = []
    yield started
    for process in started:
        if process.proc is not None:
            process.kill()


def start(processes: list[PliProcess], gw: Gateway, log: Path) -> PliProcess:
    process = PliProcess(gw, log)
    processes.append(process)
    return process.start()


def test_a_message_acknowledged_before_a_kill_9_is_delivered_once_after_restart(
        tmp_path: Path, loop: LoopThread, processes: list[PliProcess]) -> None:
    gw = make_gateway(tmp_path / "pli")
    log = tmp_path / "pli.log"
    first = start(processes, gw, log)
    queue_id = submit(gw)  # the provider is down: nothing listens on its port
    assert first.kill(signal.SIGKILL) == -signal.SIGKILL
    assert [m.id for m in queued(gw)] == [queue_id]

    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    try:
        start(processes, gw, log)
        got = wait_until(lambda: provider.received, timeout=15)
        wait_queue_empty(gw)
        stays(lambda: len(provider.received) == 1, 0.8)
    finally:
        provider.stop()
    assert got[0].mail_from == ADDRESS and got[0].rcpt_tos == [PATIENT]
    assert b"Subject: Rendez-vous" in got[0].content


def test_sigterm_stops_pli_promptly_and_the_queued_message_survives(
        tmp_path: Path, processes: list[PliProcess]) -> None:
    gw = make_gateway(tmp_path / "pli")
    log = tmp_path / "pli.log"
    pli = start(processes, gw, log)
    queue_id = submit(gw)
    wait_until(lambda: (m := queued(gw)) and m[0].attempts >= 1, timeout=10)
    asked = time.monotonic()
    assert pli.kill(signal.SIGTERM) == 0
    assert time.monotonic() - asked < 5
    meta = queued(gw)
    assert [m.id for m in meta] == [queue_id]
    assert [r.state for r in meta[0].recipients] == ["pending"]
    assert not (gw.settings().data_dir / "pli.pid").exists()
    assert '"event": "pli.stopped"' in log.read_text()
