"""The spool folder's group commit (``gateway.spool.commit``): a writer's ``sync()``
returns only once an fsync of the folder that began after it was called has ended, and
writers arriving during one fsync share the next. The power-cut test shows the result on
a real disk; this pins the rule itself, for any timing of the threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gateway.spool import commit
from gateway.spool.commit import FolderSync


class Recorder:
    """Stands in for the folder's fsync: records when each began and ended."""

    def __init__(self, takes: float = 0.05) -> None:
        self.takes = takes
        self.spans: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.fail_next: OSError | None = None

    def __call__(self, path: Path) -> None:
        began = time.monotonic()
        time.sleep(self.takes)
        with self.lock:
            failure, self.fail_next = self.fail_next, None
            if failure is not None:
                raise failure
            self.spans.append((began, time.monotonic()))


@pytest.fixture
def fsync(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(commit, "fsync_folder", recorder)
    return recorder


def test_one_writer_gets_one_fsync_of_the_folder(tmp_path: Path, fsync: Recorder) -> None:
    sync = FolderSync(tmp_path)
    called = time.monotonic()
    sync.sync()
    returned = time.monotonic()
    assert len(fsync.spans) == 1 and sync.fsyncs == 1
    began, ended = fsync.spans[0]
    assert called <= began and ended <= returned
    sync.sync()  # the next change needs an fsync of its own
    assert len(fsync.spans) == 2 and sync.fsyncs == 2


def test_every_writer_returns_after_an_fsync_that_began_after_its_call(
        tmp_path: Path, fsync: Recorder) -> None:
    """Twenty writers in three waves: each is covered by an fsync that started after it
    called, and they share fsyncs (far fewer than twenty)."""
    sync = FolderSync(tmp_path)
    times: list[tuple[float, float]] = []
    lock = threading.Lock()

    def writer(delay: float) -> None:
        time.sleep(delay)
        called = time.monotonic()
        sync.sync()
        with lock:
            times.append((called, time.monotonic()))

    threads = [threading.Thread(target=writer, args=(wave * 0.03,))
               for wave in range(3) for _ in range(7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(times) == 21
    for called, returned in times:
        assert any(called <= began and ended <= returned for began, ended in fsync.spans), \
            (called, returned, fsync.spans)
    assert sync.fsyncs == len(fsync.spans) < 21


def test_the_writers_an_fsync_was_meant_to_cover_get_its_error(
        tmp_path: Path, fsync: Recorder) -> None:
    sync = FolderSync(tmp_path)
    fsync.fail_next = OSError(5, "Input/output error")
    with pytest.raises(OSError) as raised:
        sync.sync()
    assert raised.value.errno == 5
    sync.sync()  # the next one is tried anew, and covers it
    assert len(fsync.spans) == 1 and sync.fsyncs == 1
