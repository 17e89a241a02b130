"""`pli queue list|flush|delete` as an administrator types them, against a real spool and a
real `pli run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.spool.helpers import PATIENT, queued, spool_of, submit, wait_deferred
from tests.support import (
    ADDRESS,
    Gateway,
    LoopThread,
    PliProcess,
    Provider,
    RunningApp,
    make_gateway,
    wait_until,
)


def pli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "-c", str(gw.config)],
                          check=False, capture_output=True, text=True, timeout=30)


@pytest.fixture
def deferred_id(gw: Gateway, loop: LoopThread) -> str:
    """A message Pli accepted, tried once while the provider was down, then Pli stopped."""
    app = RunningApp(loop, gw).start()
    try:
        queue_id = submit(gw)
        wait_deferred(gw, queue_id)
    finally:
        app.stop()
    return queue_id


def test_queue_list_shows_each_message_and_the_last_answer(
        gw: Gateway, deferred_id: str) -> None:
    done = pli(gw, "queue", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    entry = next(line for line in lines if line.startswith(deferred_id))
    assert f"{ADDRESS} -> {PATIENT}" in entry and "tries 1" in entry
    assert any(line.strip().startswith("last answer: 451 4.4.1 Cannot reach the provider")
               for line in lines)
    assert lines[-1] == "1 message(s) queued"


def test_queue_list_of_an_empty_queue_says_so(gw: Gateway) -> None:
    done = pli(gw, "queue", "list")
    assert done.returncode == 0
    assert done.stdout.strip() == "0 message(s) queued"


def test_queue_delete_removes_the_message_for_good(gw: Gateway, deferred_id: str) -> None:
    done = pli(gw, "queue", "delete", deferred_id)
    assert done.returncode == 0, done.stderr
    assert deferred_id in done.stdout and "1 recipient(s) will not receive it" in done.stdout
    assert queued(gw) == []
    assert list(spool_of(gw).queue_dir.iterdir()) == []
    assert list(spool_of(gw).state_dir.iterdir()) == []
    assert pli(gw, "queue", "list").stdout.strip() == "0 message(s) queued"


def test_queue_delete_of_an_unknown_id_fails_clearly(gw: Gateway, deferred_id: str) -> None:
    done = pli(gw, "queue", "delete", "1A2B3C4D5E6F7")
    assert done.returncode == 1
    assert done.stderr.strip() == "pli: no queued message 1A2B3C4D5E6F7"
    assert [m.id for m in queued(gw)] == [deferred_id]


def test_queue_delete_of_a_message_being_delivered_asks_to_try_again(
        gw: Gateway, deferred_id: str) -> None:
    with spool_of(gw).locked(deferred_id) as held:  # as the worker does while relaying
        assert held is not None
        done = pli(gw, "queue", "delete", deferred_id)
    assert done.returncode == 1
    assert "being delivered right now" in done.stderr
    assert [m.id for m in queued(gw)] == [deferred_id]


def test_queue_flush_makes_the_running_pli_retry_now(
        tmp_path: Path, loop: LoopThread) -> None:
    gw = make_gateway(tmp_path / "pli")
    # Retries an hour apart, so only the flush can explain a delivery within seconds.
    gw.config.write_text(gw.config.read_text()
                         .replace("retry_min = 0.3", "retry_min = 3600")
                         .replace("retry_max = 1.0", "retry_max = 7200")
                         .replace("scan_interval = 0.2", "scan_interval = 3600"))
    process = PliProcess(gw, tmp_path / "pli.log").start()
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False)
    try:
        queue_id = submit(gw)
        meta = wait_deferred(gw, queue_id)
        assert meta.next_attempt > meta.created + 3000
        provider.start()
        done = pli(gw, "queue", "flush")
        assert done.returncode == 0, done.stderr
        assert "retried now" in done.stdout
        wait_until(lambda: provider.received, timeout=10)
        wait_until(lambda: not queued(gw), timeout=5)
    finally:
        process.kill()
        provider.stop()
    assert len(provider.received) == 1


def test_queue_flush_without_a_running_pli_says_it_will_happen_at_start(
        gw: Gateway, deferred_id: str) -> None:
    done = pli(gw, "queue", "flush")
    assert done.returncode == 0
    assert "not running" in done.stdout


def test_queue_delete_refuses_a_path_instead_of_an_id(gw: Gateway, deferred_id: str) -> None:
    outside = gw.folder / "data" / "spool" / "queue"
    done = pli(gw, "queue", "delete", f"../../{outside.name}/{deferred_id}")
    assert done.returncode == 1 and "not a queue id" in done.stderr
    assert [m.id for m in queued(gw)] == [deferred_id]


def test_queue_flush_does_not_signal_a_process_that_is_not_pli(gw: Gateway) -> None:
    import subprocess as sp
    bystander = sp.Popen(["sleep", "30"])
    try:
        (gw.folder / "data").mkdir(exist_ok=True)
        (gw.folder / "data" / "pli.pid").write_text(f"{bystander.pid}\n")  # left by a crash
        done = pli(gw, "queue", "flush")
        assert done.returncode == 0 and "not running" in done.stdout
        assert bystander.poll() is None  # SIGUSR1 would have killed it
    finally:
        bystander.kill()
        bystander.wait()
