"""Group commit of a folder: writers that rename a file into it at about the same moment
share one fsync of the folder, as databases share one flush of their log.

A writer calls :meth:`FolderSync.sync` after its rename; the call returns once an fsync
of the folder that began after that rename has ended, so the new name is durable. While
one fsync runs, the writers arriving meanwhile wait and then share the next one. Blocking:
called from the spool's threads.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class FolderSync:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._state = threading.Condition()
        self._announced = 0  # changes made in the folder that need an fsync
        self._durable = 0  # changes covered by an fsync that has ended
        self._running = False
        self.fsyncs = 0  # fsyncs done, for tests and figures

    def sync(self) -> None:
        """Return once every change this thread made in the folder before calling is
        durable. Raises the fsync's error if the one meant to cover it failed."""
        with self._state:
            self._announced += 1
            mine = self._announced
            while self._durable < mine:
                if self._running:
                    self._state.wait()
                    continue
                self._running = True
                covers = self._announced
                self._state.release()
                try:
                    fsync_folder(self.folder)
                except BaseException:
                    self._state.acquire()
                    self._running = False
                    self._state.notify_all()
                    raise
                self._state.acquire()
                self._running = False
                self.fsyncs += 1
                self._durable = max(self._durable, covers)
                self._state.notify_all()


def fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
