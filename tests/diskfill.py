"""A small real filesystem for full-disk tests, filled to the page.

``small_disk`` mounts a tmpfs for the test itself (root only; skipped otherwise), for
code running in the test's own process. ``leave_free`` fills any folder's filesystem,
this one or the one a `pli run` has in its own mount namespace (tests/spool/
test_disk_full.py), until exactly the bytes asked for are left."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = os.sysconf("SC_PAGE_SIZE")
FILLER = "filler"


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m") -> Iterator[Path]:
    """``folder`` with a tmpfs of ``size`` mounted on it for the duration."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(folder)], capture_output=True, timeout=10, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10,
                       check=False)


def leave_free(folder: Path, free: int) -> None:
    """Grow or shrink ``folder/filler`` (written, not sparse: tmpfs counts pages) until
    exactly ``free`` bytes, a whole number of pages, are left on the filesystem."""
    assert free % PAGE == 0, "tmpfs gives room by the page"
    filler = folder / FILLER
    filler.touch()
    with filler.open("r+b", buffering=0) as f:  # unbuffered: a full disk is said by
        # the write itself, never later by the close that would flush what was left
        size = os.fstat(f.fileno()).st_size
        target = max(0, size + free_bytes(folder) - free)
        if target < size:
            f.truncate(target)
        else:
            f.seek(size)
            try:
                f.write(b"\0" * (target - size))
                f.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC or free > 0:
                    raise
    assert free_bytes(folder) == free, (free_bytes(folder), free)


def make_room(folder: Path) -> None:
    (folder / FILLER).unlink(missing_ok=True)
