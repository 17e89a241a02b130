"""The log level chooses what the journal gets, and nothing else: the audit trail and the
metrics see every event whatever the level."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway import logs
from gateway.audit import AuditTrail, verify
from gateway.metrics import Metrics, observer
from tests.spool.helpers import submit
from tests.support import PliProcess, make_gateway, wait_until


@pytest.fixture
def restored_logs() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_a_raised_level_quiets_the_journal_but_not_the_trail_nor_the_metrics(
        tmp_path: Path, restored_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    trail = AuditTrail(tmp_path / "audit")
    metrics = Metrics()
    logs.configure(json=True, level=logging.ERROR, audit=trail, observers=[observer(metrics)])
    log = logs.get_logger("test")
    log.info("policy.decided", queue_id="Q1", sender="dr@cabinet.fr",
             recipients=["p@example.org"], rule="patients", action="protect")
    log.debug("delivery.sent", queue_id="Q1", recipient="p@example.org", reply="250 2.0.0")
    log.warning("session.disk_full", client="192.0.2.1", user="martin")
    log.error("policy.reload_failed", policy="policy.toml", problems=["rule 2"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["event"] for p in printed] == ["policy.reload_failed"]
    assert printed[0]["level"] == "error"
    records = [json.loads(line) for _path, _n, line in trail.records()]
    assert [r["event"] for r in records] == ["policy.decided", "delivery.sent",
                                             "policy.reload_failed"]
    assert records[0]["rule"] == "patients" and verify(trail) == (3, [])
    assert metrics.value("pli_messages_decided_total", "protect") == 1
    assert metrics.value("pli_deliveries_total", "sent") == 1
    assert metrics.value("pli_disk_full_refusals_total") == 1
    assert metrics.value("pli_policy_reloads_total", "failed") == 1


def test_the_default_level_writes_info_and_leaves_debug_out(
        tmp_path: Path, restored_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(json=True, audit=AuditTrail(tmp_path / "audit"))
    log = logs.get_logger("test")
    log.debug("queue.flushed")
    log.info("spool.recovered", queued=0, removed_partial=0)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["event"], p["level"]) for p in printed] == [("spool.recovered", "info")]


def test_pli_run_at_warning_level_still_audits_every_decision(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    gw.config.write_text('log_level = "warning"\n' + gw.config.read_text())
    pli = PliProcess(gw, tmp_path / "pli.log").start()
    try:
        queue_id = submit(gw)  # the provider is not there: the delivery is deferred
        wait_until(lambda: any("delivery.deferred" in line for p in
                               (gw.folder / "data" / "audit").glob("audit-*.jsonl")
                               for line in p.read_text().splitlines()), timeout=15)
    finally:
        assert pli.kill(signal.SIGTERM) == 0
    assert '"level": "info"' not in pli.log()  # the journal kept to warnings and errors
    shown = subprocess.run([sys.executable, "-m", "gateway.cli", "audit", "show", "--message",
                            queue_id, "-c", str(gw.config)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    told = [line.split()[1] for line in shown.stdout.splitlines()]
    assert told[:2] == ["policy.decided", "spool.queued"] and "delivery.deferred" in told


def test_pli_run_on_a_terminal_writes_readable_lines_not_json(tmp_path: Path) -> None:
    """The README's "readable text when stdout is a terminal"."""
    import os
    import pty
    import select
    import time

    gw = make_gateway(tmp_path / "pli")
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(gw.config)],
                            stdout=terminal, stderr=terminal, start_new_session=True)
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"pli.ready" not in seen and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                seen += os.read(controller, 65536)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        os.close(controller)
    lines = [line for line in seen.decode(errors="replace").splitlines() if line.strip()]
    started = [line for line in lines if "pli.ready" in line]
    assert started, lines
    assert not any(line.lstrip().startswith("{") for line in lines), lines
    with pytest.raises(ValueError):
        json.loads(started[0])
