"""A full disk and the audit trail: no record is ever left in part, records wait in
memory (bounded) until there is room, a gap is said by a record of its own, and `pli
audit verify` passes after the disk has been full. On a real tmpfs, filled to the page."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.audit import AuditTrail, verify
from tests.diskfill import PAGE, leave_free, make_room, small_disk
from tests.spool.test_disk_full import NAMESPACE, inside, on_small_disk
from tests.support import wait_until


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", size="1m") as folder:
        yield folder


def sent(trail: AuditTrail, first: int, count: int) -> None:
    for i in range(first, first + count):
        trail.record("delivery.sent", queue_id=f"Q{i}", recipient=f"patient{i}@example.org",
                     reply="250 2.0.0 Ok")


def records(trail: AuditTrail) -> list[dict[str, Any]]:
    return [json.loads(line) for _path, _n, line in trail.records()]


def test_a_write_the_full_disk_takes_in_part_is_cut_back_to_the_last_whole_record(
        disk: Path) -> None:
    trail = AuditTrail(disk / "audit")
    sent(trail, 0, 3)
    [path] = trail.files()
    before = path.read_bytes()
    assert len(before) % PAGE, "the file's last page has room: the disk takes a part"
    leave_free(disk, 0)
    with pytest.raises(OSError):
        trail.append([(time.time(), {"event": "delivery.sent", "queue_id": f"B{i}"})
                      for i in range(40)])  # about 4 KB: more than the page has left
    assert path.read_bytes() == before
    assert verify(trail) == (3, [])
    make_room(disk)
    sent(trail, 3, 2)
    assert verify(trail) == (5, [])
    assert [r["queue_id"] for r in records(trail)] == ["Q0", "Q1", "Q2", "Q3", "Q4"]


def test_a_record_a_crash_left_unterminated_is_cut_before_the_next(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit")
    sent(trail, 0, 2)
    [path] = trail.files()
    whole = path.read_bytes()
    with path.open("ab") as handle:  # the first half of record 3, as a power cut leaves it
        handle.write(b'{"seq":3,"ts":"2025-02-03T10:00:00.000Z","event":"delivery.se')
    sent(trail, 2, 1)
    assert path.read_bytes().startswith(whole)
    assert verify(trail) == (3, [])


def test_records_wait_while_the_disk_is_full_and_go_in_when_there_is_room(
        disk: Path) -> None:
    trail = AuditTrail(disk / "audit")
    trail.start_writer(retry_interval=0.05)
    try:
        with capture_logs() as logged:
            leave_free(disk, 0)  # no file yet: not a byte of the trail can go in
            sent(trail, 0, 30)
            wait_until(lambda: trail.waiting == 30)
            assert records(trail) == []
            make_room(disk)
            wait_until(lambda: trail.waiting == 0)
            sent(trail, 30, 1)
    finally:
        trail.close()
    assert verify(trail) == (31, [])
    assert [r["queue_id"] for r in records(trail)] == [f"Q{i}" for i in range(31)]
    events = [e["event"] for e in logged if e["event"].startswith("audit.")]
    assert events == ["audit.unwritable", "audit.resumed"]  # said once, not at each try
    assert next(e for e in logged if e["event"] == "audit.unwritable")["error"] == \
        os.strerror(errno.ENOSPC)


def test_records_beyond_what_may_wait_are_counted_in_a_gap_record(disk: Path) -> None:
    trail = AuditTrail(disk / "audit")
    trail.start_writer(max_waiting=5, retry_interval=0.05)
    try:
        leave_free(disk, 0)
        sent(trail, 0, 4)
        trail.record("portal.page", link="L1", outcome="shown", client="192.0.2.7")
        wait_until(lambda: trail.waiting == 5)
        sent(trail, 5, 30)
        wait_until(lambda: trail.waiting == 35)
        make_room(disk)
        wait_until(lambda: trail.waiting == 0)
        sent(trail, 35, 1)
    finally:
        trail.close()
    written = records(trail)
    assert verify(trail) == (7, [])
    assert [r.get("queue_id") for r in written[:5]] == ["Q0", "Q1", "Q2", "Q3", None]
    assert written[4]["event"] == "portal.page"  # the five that waited, in order
    gap = written[5]
    assert gap["event"] == "audit.gap" and gap["lost"] == 30
    assert gap["events"] == ["delivery.sent"]
    assert gap["first"] <= gap["last"] == gap["ts"]
    assert written[6]["queue_id"] == "Q35"  # then the trail goes on


def test_what_still_waits_when_the_server_stops_is_said_in_the_log(disk: Path) -> None:
    trail = AuditTrail(disk / "audit")
    trail.start_writer(retry_interval=30)  # no second try before the stop
    with capture_logs() as logged:
        leave_free(disk, 0)
        sent(trail, 0, 3)
        wait_until(lambda: trail.waiting == 3)
        started = time.monotonic()
        trail.close()  # one last try, then the thread ends
    assert time.monotonic() - started < 5
    dropped = [e for e in logged if e["event"] == "audit.dropped_at_stop"]
    assert [e["records"] for e in dropped] == [3] and dropped[0]["log_level"] == "error"
    make_room(disk)
    assert records(trail) == []


def _reloads(audit: Path) -> int:
    count = 0
    for path in sorted(audit.glob("audit-*.jsonl")):
        for line in path.read_bytes().splitlines():
            count += line.count(b'"event":"policy.reloaded"')
    return count


@pytest.mark.skipif(NAMESPACE is None, reason="no mount namespace can be made here")
def test_pli_run_keeps_a_chain_that_verifies_through_a_full_disk(tmp_path: Path) -> None:
    """Each reload (SIGHUP) makes two audit records: policy.reloaded and tls.reloaded."""
    gw, pli = on_small_disk(tmp_path, protect=False)
    try:
        data = inside(pli, gw.settings().data_dir)
        audit = inside(pli, gw.settings().audit_dir)
        assert pli.proc is not None
        pid = pli.proc.pid

        def reloads_logged() -> int:
            return pli.log().count('"event": "policy.reloaded"')

        def reload(times: int) -> None:
            for _ in range(times):
                wanted = reloads_logged() + 1
                os.kill(pid, signal.SIGHUP)
                wait_until(lambda: reloads_logged() >= wanted)  # noqa: B023 (waited here)

        reload(1)
        wait_until(lambda: _reloads(audit) == 1)
        leave_free(data, 0)
        # The last page of the file still takes a few records; then none.
        done = 1
        while done < 40 and '"event": "audit.unwritable"' not in pli.log():
            reload(1)
            done += 1
        reload(2)
        make_room(data)
        reload(1)
        done += 3
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _reloads(audit) == done, timeout=10)
        count, findings = verify(AuditTrail(audit))
        assert findings == []
        assert _reloads(audit) == done  # every reload is there, none lost or in part
        assert count == 2 * done + 1  # policy and certificate; the vault's first purge
        assert all(p.read_bytes().endswith(b"\n") for p in audit.glob("audit-*.jsonl"))
        log = pli.log()
        assert log.count('"event": "audit.unwritable"') == 1
        assert log.count('"event": "audit.resumed"') == 1
        assert pli.kill(signal.SIGTERM) == 0
    finally:
        if pli.proc is not None:
            pli.kill()


def test_as_pli_run_starts_it_10000_records_wait_and_go_in_at_the_first_try_after_room(
        tmp_path: Path) -> None:
    """The README's numbers, with the writer `pli run` starts (its defaults): up to 10,000
    records wait while the disk is full, the 10,001st is counted in a gap, and once there
    is room they go in at the next try, which comes every second (1.15 s here for all
    10,000: the wait and the write)."""
    with small_disk(tmp_path / "disk", size="8m") as disk:  # room for 10,000 records
        trail = AuditTrail(disk / "audit")
        trail.start_writer()
        took = filled_then_freed(trail, disk)
        written = records(trail)
    assert [r["event"] for r in written[-2:]] == ["spool.queued", "audit.gap"]
    assert len(written) == 10_001 and written[-1]["lost"] == 1
    assert took < 2, f"{took:.2f} s after there was room"


def filled_then_freed(trail: AuditTrail, disk: Path) -> float:
    """10,001 records made on a full disk, then room: seconds until they are in."""
    try:
        leave_free(disk, 0)
        for i in range(10_001):
            trail.record("spool.queued", queue_id=f"Q{i}", size=i)
        wait_until(lambda: trail.waiting == 10_001, timeout=20)
        make_room(disk)
        room = time.monotonic()
        wait_until(lambda: trail.waiting == 0, timeout=10, step=0.02)
        return time.monotonic() - room
    finally:
        trail.close()
