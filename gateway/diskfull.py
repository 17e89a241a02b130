"""Leaf: whether an error means the disk is full, whoever wrote.

A file write that finds no room fails with ENOSPC (EDQUOT over a quota). SQLite says the
same in its own words: SQLITE_FULL ("database or disk is full") when the database or its
write-ahead log cannot grow, and SQLITE_IOERR_SHMSIZE ("disk I/O error") when the
write-ahead log's shared-memory index cannot be made, which is what the first write after
a quiet moment meets on a disk already full (SQLite deletes both files when its last
connection closes).

:func:`sqlite_errors_as_os_errors` turns SQLite's kind into the OSError a file write
raises, so that whoever handles a full disk (the 452 4.3.1 at the end of DATA) handles
both without knowing SQLite is there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator

_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL = 13
SQLITE_IOERR_SHMSIZE = 4874  # SQLITE_IOERR | (19 << 8)
_SQLITE_CODES = (SQLITE_FULL, SQLITE_IOERR_SHMSIZE)


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) in _SQLITE_CODES
    return False


@contextlib.contextmanager
def sqlite_errors_as_os_errors(filename: os.PathLike[str] | str) -> Iterator[None]:
    """Re-raise SQLite's full-disk errors met inside as ``OSError(ENOSPC)`` naming
    ``filename`` (the SQLite error stays attached as its cause); others pass unchanged."""
    try:
        yield
    except sqlite3.Error as exc:
        if not is_disk_full(exc):
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(filename)) from exc
