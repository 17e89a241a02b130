"""The audit trail's writer thread: records go to the file in batches, in the order they
were made, and wait in memory while the file cannot take them.

The event loop only puts records on a queue; this thread gathers those made within
``BATCH_WINDOW`` and hands them to the trail, which chains and appends them whole (a
failed write is cut back to the last whole record, see ``gateway.audit``). When a write
fails (a full disk), the records not written wait, in order, and the whole lot is tried
again every ``retry_interval`` seconds until it goes through. At most ``max_waiting``
records wait: those made beyond are not kept, only counted, and an ``audit.gap`` record
(how many, from when to when, which events) takes their place in the chain, so the
trail still verifies and says where it has a hole.

The thread never raises: the trail failing must not take the gateway down. What it
cannot write by the time the server stops is said in the log (``audit.dropped_at_stop``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

Stamped = tuple[float, dict[str, Any]]
"""A record made at a time (seconds since the epoch), not chained yet."""

Append = Callable[[list[Stamped]], tuple[int, OSError | None]]
"""Chains and writes records in order; says how many went in, and why the rest did not."""

BATCH_WINDOW = 0.05
"""Seconds the thread waits after a record for others to write with it."""
MAX_WAITING = 10_000
"""Records kept in memory while the trail cannot be written (16 MB of decisions at most)."""
RETRY_INTERVAL = 1.0
"""Seconds between tries while the trail cannot be written."""

log = structlog.get_logger("pli.audit")


@dataclass
class Gap:
    """Records made while too many were waiting: counted, not kept."""

    lost: int = 0
    first: float = 0.0
    last: float = 0.0
    events: set[str] = field(default_factory=set)

    def add(self, stamped: Stamped) -> None:
        when, record = stamped
        self.first = when if self.lost == 0 else self.first
        self.last = when
        self.lost += 1
        self.events.add(str(record.get("event")))


class Writer:
    def __init__(self, append: Append, gap_record: Callable[[Gap], Stamped], *,
                 max_waiting: int = MAX_WAITING, retry_interval: float = RETRY_INTERVAL,
                 batch_window: float = BATCH_WINDOW) -> None:
        self.append = append
        self.gap_record = gap_record
        self.max_waiting = max_waiting
        self.retry_interval = retry_interval
        self.batch_window = batch_window
        self._queue: queue.SimpleQueue[Stamped | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pli-audit", daemon=True)
        # Records made and not yet written, oldest first; a Gap, when there is one, is
        # last (everything made after it is counted in it until it is written).
        self._waiting: list[Stamped | Gap] = []
        self._failing = False
        self.waiting = 0
        """Records the last try could not write (a gap's included): 0 once all are in."""

    def start(self) -> None:
        self._thread.start()

    def put(self, stamped: Stamped) -> None:
        self._queue.put(stamped)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued or waiting (one more try), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = self._next_batch()
            stop = None in batch
            self._waiting.extend(item for item in batch if item is not None)
            if self._waiting:
                self._write()
        if self._waiting:
            log.error("audit.dropped_at_stop", records=self.waiting)

    def _next_batch(self) -> list[Stamped | None]:
        """What was made since the last write: at least one record when none wait; while
        records wait, whatever comes within the retry interval (perhaps nothing)."""
        batch: list[Stamped | None] = []
        if not self._waiting:
            batch.append(self._queue.get())
            if batch[0] is not None:
                # Let the records of the same moment join this one: a message makes
                # several, and each write costs a lock, a listing and a head file.
                time.sleep(self.batch_window)
        else:
            deadline = time.monotonic() + self.retry_interval
            while None not in batch and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                return batch

    def _write(self) -> None:
        stamped = [self.gap_record(item) if isinstance(item, Gap) else item
                   for item in self._waiting]
        lost = sum(item.lost for item in self._waiting if isinstance(item, Gap))
        try:
            written, error = self.append(stamped)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the thread
            written, error = 0, OSError(str(type(exc).__name__))
        del self._waiting[:written]
        if error is None:
            self.waiting = 0
            if self._failing:
                self._failing = False
                log.info("audit.resumed", written=written, lost=lost)
            return
        self._bound()
        self.waiting = sum(item.lost if isinstance(item, Gap) else 1 for item in self._waiting)
        if not self._failing:
            self._failing = True
            log.error("audit.unwritable", error=error.strerror or str(error),
                      waiting=self.waiting, retry_in=self.retry_interval)

    def _bound(self) -> None:
        """Keep at most ``max_waiting`` records; count the newest beyond in a Gap."""
        waiting = self._waiting
        gap = next((i for i, item in enumerate(waiting) if isinstance(item, Gap)), None)
        if gap is None:
            if len(waiting) <= self.max_waiting:
                return
            gap = self.max_waiting
            waiting.insert(gap, Gap())
        marker = waiting[gap]
        assert isinstance(marker, Gap)
        for item in waiting[gap + 1:]:
            assert not isinstance(item, Gap)
            marker.add(item)
        del waiting[gap + 1:]
