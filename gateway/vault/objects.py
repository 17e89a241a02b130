"""Leaf: what the vault asks of an object store, whichever holds the ciphertext.

Two stores answer it: files in the vault's folder (:mod:`gateway.vault.store`, the
default) and an OpenStack Swift container (:mod:`gateway.vault.swift`); ``[vault]
objects`` in pli.toml chooses, ``gateway/app.py`` builds it. A store keeps sealed objects
by link (``<link-id>/<object-id>``) and never sees a key: the vault seals before it
writes and the browser opens what it reads.

What every store guarantees:

- ``write`` and a writer's ``commit`` return once the object is durable (fsync'd; in
  Swift, stored on a quorum of its replicas); an object whose writing failed or was
  aborted is never there to be read, not even in part.
- ``commit_link`` makes the link's objects durable together (the files store fsyncs the
  link's folder; Swift has nothing left to do). Objects of a link without an index row
  are never served: the index row, written after ``commit_link``, is what makes a link.
- ``remove_link`` deletes every object of the link, and says how many and how big.
- ``link_ids`` and ``age`` let the hourly purge find what a crashed seal left behind;
  ``remove_stale_tmp`` removes pieces of interrupted writes, where a store has any.

Everything is blocking: the vault is called from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

READ_CHUNK = 64 * 1024


class StoreUnavailable(OSError):
    """The object store could not be reached or refused to work (Swift down, its
    credentials refused, a 5xx): nothing was stored, and the caller may try again later.
    An OSError, as a disk's failure would be; ``errno.ENOSPC`` when the store has no room.
    The message names the store and what failed, never an object's content."""


@dataclass(frozen=True)
class Removed:
    objects: int = 0
    bytes: int = 0


class CiphertextReader(Protocol):
    """An open sealed object, for serving its bytes as they are (with HTTP ranges).

    ``size`` is the total length; :meth:`iter_range` yields ``[start, end)`` in chunks;
    :meth:`read` reads it in order from the start (to open it with the format module).
    Use it as a context manager, or call :meth:`close`."""

    size: int

    def iter_range(self, start: int = 0, end: int | None = None,
                   chunk_size: int = READ_CHUNK) -> Iterator[bytes]: ...

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> CiphertextReader: ...

    def __exit__(self, *exc: object) -> None: ...


class ObjectWriter(Protocol):
    """One object written piece by piece as it arrives (a reply's upload): nothing of it
    can be read until :meth:`commit`; :meth:`abort` drops it. ``size``: bytes so far."""

    size: int

    def write(self, data: bytes) -> None: ...

    def commit(self) -> int: ...

    def abort(self) -> None: ...


@runtime_checkable
class ObjectStore(Protocol):
    def create(self) -> None:
        """Make the store ready where that needs no network (folders)."""

    def connect(self) -> None:
        """Reach the store now (a login, the container made if missing); StoreUnavailable
        (or ConfigError for an unreadable key) says why not."""

    def new_link(self, link_id: str) -> None:
        """Begin a link; FileExistsError if its id is taken (ids are never reused)."""

    def write(self, link_id: str, object_id: str, blocks: Iterable[bytes]) -> int:
        """Stream ``blocks`` into the object, durably and whole or not at all; its size."""

    def writer(self, link_id: str, object_id: str) -> ObjectWriter: ...

    def commit_link(self, link_id: str) -> None: ...

    def remove_link(self, link_id: str) -> Removed: ...

    def open(self, link_id: str, object_id: str) -> CiphertextReader:
        """FileNotFoundError if there is no such object."""

    def link_ids(self) -> list[str]: ...

    def age(self, link_id: str, now: float | None = None) -> float:
        """Seconds since the link's objects last changed."""

    def remove_stale_tmp(self, older_than: float, now: float | None = None) -> int: ...

    def close(self) -> None:
        """Let go of connections kept for the next requests (the store stays usable)."""
