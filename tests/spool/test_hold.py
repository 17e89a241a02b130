"""A message that fails on Pli's side (a bug, a spool file edited by hand) is tried a few
times, then set aside in hold/ for a person, instead of being tried again and again; `pli
queue list` says why, `pli queue release ID` sends it again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.spool.store import QueuedMessage, Recipient, Spool, new_queue_id
from tests.spool.helpers import PATIENT, message, named, spool_of, stays, wait_queue_empty
from tests.support import ADDRESS, Gateway, LoopThread, Provider, RunningApp, wait_until

Events = list[dict[str, Any]]


def pli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "-c", str(gw.config)],
                          check=False, capture_output=True, text=True, timeout=30)


def enqueue(spool: Spool, recipient: str) -> QueuedMessage:
    spool.create()
    data = message(to=PATIENT)
    queued = QueuedMessage(id=new_queue_id(), mail_from=ADDRESS,
                           recipients=[Recipient(recipient)], created=time.time(),
                           size=len(data), route_sender=ADDRESS)
    spool.enqueue(queued, data)
    return queued


def errors(events: Events, queue_id: str) -> list[dict[str, object]]:
    return named(events, "delivery.internal_error", queue_id=queue_id)


def test_a_message_failing_on_plis_side_three_times_is_held_and_stays_held(
        gw: Gateway, loop: LoopThread, provider: Provider, events: Events) -> None:
    spool = spool_of(gw)
    # A recipient that would read as two commands: only a hand-edited spool has one, and
    # the transaction refuses to write it (ValueError), before a byte goes out.
    bad = enqueue(spool, "x>@example.org")
    app = RunningApp(loop, gw).start()
    try:
        wait_until(lambda: spool.ids(held=True) == [bad.id], timeout=10)
        # Not tried again: with retries 0.3 s, then 0.6 s apart, a fourth would come by now.
        stays(lambda: len(errors(events, bad.id)) == 3, 1.5)
    finally:
        app.stop()
    assert [e["times"] for e in errors(events, bad.id)] == [1, 2, 3]
    assert named(events, "spool.held", queue_id=bad.id, error="ValueError")
    assert spool.ids() == [] and provider.received == []

    listed = pli(gw, "queue", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.startswith(bad.id) and line.endswith("(held)") for line in lines)
    assert any("held: internal error (ValueError) at 3 attempts in a row" in line
               and f"pli queue release {bad.id}" in line for line in lines)
    assert lines[-1] == "0 message(s) queued, 1 held"

    app = RunningApp(loop, gw).start()  # a restart keeps it held
    try:
        stays(lambda: spool.ids(held=True) == [bad.id] and len(errors(events, bad.id)) == 3, 1.0)
    finally:
        app.stop()


def test_pli_queue_release_sends_a_held_message_again(
        gw: Gateway, loop: LoopThread, provider: Provider) -> None:
    spool = spool_of(gw)
    held = enqueue(spool, PATIENT)
    with spool.locked(held.id) as locked:
        assert locked is not None
        locked.internal_errors = 3
        spool.hold(locked, "internal error (KeyError) at 3 attempts in a row")
    app = RunningApp(loop, gw).start()
    try:
        stays(lambda: not provider.received, 0.5)  # held: not delivered
        done = pli(gw, "queue", "release", held.id)
        assert done.returncode == 0, done.stderr
        assert f"released {held.id}" in done.stdout
        wait_until(lambda: provider.received, timeout=10)
        wait_queue_empty(gw)
        stays(lambda: len(provider.received) == 1, 0.5)
    finally:
        app.stop()
    assert provider.received[0].rcpt_tos == [PATIENT]
    assert spool.ids(held=True) == []
    assert pli(gw, "queue", "release", held.id).returncode == 1  # no longer held


def test_a_held_message_can_be_deleted(gw: Gateway, tmp_path: Path) -> None:
    spool = spool_of(gw)
    held = enqueue(spool, PATIENT)
    with spool.locked(held.id) as locked:
        assert locked is not None
        spool.hold(locked, "internal error (KeyError) at 3 attempts in a row")
    done = pli(gw, "queue", "delete", held.id)
    assert done.returncode == 0, done.stderr
    assert spool.ids(held=True) == [] and list(spool.state_dir.iterdir()) == []
