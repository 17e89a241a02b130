"""The Swift object store: sealed objects in one OpenStack Swift container per practice.

    <container>/<link-id>/<object-id>     one sealed object (ciphertext only)

Each object is written by one PUT with ``Transfer-Encoding: chunked``, record by record as
the vault seals them: never whole in memory, and no length needed in advance. Swift keeps
an object only once its body has ended and a quorum of replicas has it on disk (it
answers 201 then); an upload that breaks off (Pli stopped, the network cut, the source
failed) leaves nothing behind, so there is no temporary name to clean up. The MD5 Swift
computed of what it stored is checked against Pli's own. Reading is by ranged GET, as
the portal's Range requests ask.

A link's objects carry no index row until the vault writes one, and only links with a
row are served: a seal that failed half way is invisible, and its objects are deleted
(at once, or by the hourly purge, which lists the container by link and reads the
objects' last-modified time). Swift's limit for one object (5 GiB by default) is more
than Pli's largest message.

Blocking throughout, and safe from several threads: the vault's callers use worker
threads.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Generator, Iterable
from datetime import UTC, datetime

from gateway.vault.format import is_link_id, is_object_id
from gateway.vault.objects import READ_CHUNK, Removed, StoreUnavailable
from gateway.vault.swift_client import Connection, SwiftAccount

LISTING_LIMIT = 10_000  # Swift's default most per listing
CONTENT_TYPE = "application/octet-stream"


class SwiftStore:
    """An :class:`~gateway.vault.objects.ObjectStore` in the Swift ``container``."""

    def __init__(self, account: SwiftAccount, container: str) -> None:
        self.account = account
        self.container = container
        self._connected = False

    def create(self) -> None:
        """Nothing on the network: Pli starts while Swift is away (mail that needs no
        vault still flows); :meth:`connect` runs before the first write."""

    def connect(self) -> None:
        """Log in and make the container (private: no read or write ACL) if it is not
        there; StoreUnavailable says why not. ``pli check`` and the start call it."""
        self.account.request("PUT", (self.container,), ok=(201, 202, 204))
        self._connected = True

    def _names(self, link_id: str, object_id: str | None = None) -> tuple[str, ...]:
        if not is_link_id(link_id):
            raise ValueError("invalid link id")
        if object_id is None:
            return (self.container, link_id + "/")
        if not is_object_id(object_id):
            raise ValueError("invalid object id")
        return (self.container, f"{link_id}/{object_id}")

    # -- writing ----------------------------------------------------------------------

    def new_link(self, link_id: str) -> None:
        """A link id is never reused: FileExistsError if objects already carry it."""
        self._names(link_id)
        if not self._connected:
            self.connect()
        if self._listing(prefix=link_id + "/", limit=1):
            raise FileExistsError(f"link {link_id} already has objects")

    def write(self, link_id: str, object_id: str, blocks: Iterable[bytes]) -> int:
        writer = self.writer(link_id, object_id)
        try:
            for block in blocks:
                writer.write(block)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def writer(self, link_id: str, object_id: str) -> SwiftWriter:
        names = self._names(link_id, object_id)
        if not self._connected:
            self.connect()
        connection, token = self.account.open_stream(
            "PUT", names, {"Content-Type": CONTENT_TYPE, "If-None-Match": "*"})
        return SwiftWriter(self.account, connection, token)

    def commit_link(self, link_id: str) -> None:
        """Nothing left to do: each object was durable when Swift answered its PUT."""
        self._names(link_id)

    def remove_link(self, link_id: str) -> Removed:
        """Delete each of the link's objects (one already gone is no error)."""
        objects = size = 0
        for entry in self._listing(prefix=self._names(link_id)[1]):
            self.account.request("DELETE", (self.container, entry["name"]),
                                 ok=(204, 404))
            objects += 1
            size += int(entry.get("bytes", 0))
        return Removed(objects, size)

    # -- reading ----------------------------------------------------------------------

    def open(self, link_id: str, object_id: str) -> SwiftReader:
        names = self._names(link_id, object_id)
        answer, _ = self.account.request("HEAD", names, ok=(200, 204), missing=True)
        return SwiftReader(self.account, names, int(answer.getheader("Content-Length", "0")),
                           answer.getheader("ETag"))

    def link_ids(self) -> list[str]:
        return sorted(entry["subdir"].rstrip("/")
                      for entry in self._listing(delimiter="/")
                      if "subdir" in entry and is_link_id(entry["subdir"].rstrip("/")))

    def age(self, link_id: str, now: float | None = None) -> float:
        """Seconds since the link's newest object was written."""
        now = time.time() if now is None else now
        entries = self._listing(prefix=self._names(link_id)[1])
        if not entries:
            raise FileNotFoundError(f"link {link_id} has no objects")
        return now - max(_swift_time(e["last_modified"]) for e in entries)

    def remove_stale_tmp(self, older_than: float, now: float | None = None) -> int:
        """Nothing to remove: Swift keeps no part of an upload that broke off."""
        return 0

    def close(self) -> None:
        self.account.close()

    def _listing(self, **query: object) -> list[dict[str, str]]:
        """The container's listing (JSON), page after page, or only ``limit`` entries."""
        wanted = int(str(query.pop("limit", 0))) or None
        params = {k: str(v) for k, v in query.items()}
        params.update(format="json", limit=str(min(wanted or LISTING_LIMIT, LISTING_LIMIT)))
        entries: list[dict[str, str]] = []
        while True:
            answer, body = self.account.request("GET", (self.container,), query=params,
                                                ok=(200, 204, 404))
            if answer.status == 404:  # no container yet: nothing in it
                return []
            page = json.loads(body) if body else []
            entries += page
            if not page or len(page) < int(params["limit"]) or (
                    wanted is not None and len(entries) >= wanted):
                return entries[:wanted] if wanted is not None else entries
            last = page[-1]
            params["marker"] = last.get("name") or last.get("subdir", "")


class SwiftWriter:
    """One object's chunked PUT under way: each ``write`` is a chunk; ``commit`` ends the
    body and waits for Swift's 201; ``abort`` closes the connection before the end, so
    Swift keeps nothing."""

    def __init__(self, account: SwiftAccount, connection: Connection, token: str) -> None:
        self.account = account
        self.size = 0
        self._connection: Connection | None = connection
        self._token = token
        self._md5 = hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes) -> None:
        connection = self._connection
        if connection is None:
            raise ValueError("this object was committed or aborted")
        view = memoryview(data)
        if not view.nbytes:
            return  # an empty chunk would end the body
        try:
            connection.send(b"%X\r\n" % view.nbytes)
            connection.send(view)
            connection.send(b"\r\n")
        except (OSError, http.client.HTTPException) as exc:
            self.abort()
            raise StoreUnavailable(f"Swift at {self.account.host}: the upload broke off "
                                   f"({type(exc).__name__})") from None
        self._md5.update(view)
        self.size += view.nbytes

    def commit(self) -> int:
        connection = self._connection
        if connection is None:
            raise ValueError("this object was committed or aborted")
        try:
            connection.send(b"0\r\n\r\n")
            answer = connection.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException) as exc:
            self.abort()
            raise StoreUnavailable(f"Swift at {self.account.host}: no answer to an upload "
                                   f"({type(exc).__name__})") from None
        self._connection = None
        if answer.status != 201:
            connection.close()
            if answer.status == 412:
                raise FileExistsError("the object already exists in Swift")
            raise self.account.stream_failed(self._token, answer.status, "PUT")
        self.account.release(connection)
        if (answer.getheader("ETag") or "").strip('"') != self._md5.hexdigest():
            raise StoreUnavailable(f"Swift at {self.account.host} stored other bytes than "
                                   "were sent (ETag differs)")
        return self.size

    def abort(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class SwiftReader:
    """An object in Swift, read by ranged GETs (a :class:`~gateway.vault.objects.
    CiphertextReader`). Each GET asks for the ETag seen when it was opened."""

    def __init__(self, account: SwiftAccount, names: tuple[str, ...], size: int,
                 etag: str | None) -> None:
        self.account = account
        self.names = names
        self.size = size
        self._etag = etag
        self._position = 0
        self._sequential: Generator[bytes, None, None] | None = None
        self._pending = b""
        self._open: list[tuple[Connection, http.client.HTTPResponse]] = []

    def iter_range(self, start: int = 0, end: int | None = None,
                   chunk_size: int = READ_CHUNK) -> Generator[bytes, None, None]:
        end = self.size if end is None else min(end, self.size)
        if not 0 <= start <= end:
            raise ValueError("invalid byte range")
        if start == end:
            return
        connection, answer = self._get(start, end)
        left = end - start
        try:
            while left:
                try:
                    data = answer.read(min(chunk_size, left))
                except http.client.HTTPException as exc:
                    raise OSError(f"Swift broke off a download ({type(exc).__name__})") from None
                if not data:
                    raise OSError("sealed object shrank while being read")
                left -= len(data)
                yield data
        except BaseException:
            self._done(connection, answer, reuse=False)
            raise
        self._done(connection, answer, reuse=not answer.read(1))

    def _get(self, start: int, end: int) -> tuple[Connection, http.client.HTTPResponse]:
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if self._etag:
            headers["If-Match"] = self._etag
        for attempt in (1, 2):
            token, _ = self.account.credentials()
            connection = self.account.connection()
            try:
                connection.request("GET", self.account.path(*self.names),
                                   headers={**headers, "X-Auth-Token": token})
                answer = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if attempt == 1:
                    continue  # an idle connection the server closed, or a blip
                raise StoreUnavailable(f"Swift at {self.account.host}: GET failed: "
                                       f"{type(exc).__name__}") from None
            if answer.status in (200, 206):
                first = _range_start(answer.getheader("Content-Range"))
                if answer.status == 206 and first != start or (
                        answer.status == 200 and start != 0):
                    connection.close()
                    raise OSError("Swift answered another range than the one asked for")
                self._open.append((connection, answer))
                return connection, answer
            answer.read()
            self.account.release(connection)
            if answer.status == 401 and attempt == 1:
                self.account.forget_token(token)
                continue
            if answer.status in (404, 412):
                raise FileNotFoundError("the sealed object is no longer in Swift")
            raise self.account.stream_failed(token, answer.status, "GET")
        raise StoreUnavailable(f"Swift at {self.account.host}: GET failed twice")

    def _done(self, connection: Connection, answer: http.client.HTTPResponse, *,
              reuse: bool) -> None:
        if (connection, answer) in self._open:
            self._open.remove((connection, answer))
        if reuse:
            self.account.release(connection)
        else:
            connection.close()

    def read(self, size: int = -1, /) -> bytes:
        """In order from the start: one GET of what is left, read as asked."""
        if self._sequential is None:
            self._sequential = self.iter_range(self._position, self.size)
        wanted = self.size - self._position if size < 0 else size
        parts = [self._pending]
        have = len(self._pending)
        while have < wanted:
            chunk = next(self._sequential, b"")
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        out, self._pending = data[:wanted], data[wanted:]
        self._position += len(out)
        return out

    def close(self) -> None:
        for connection, _ in self._open:
            connection.close()
        self._open.clear()
        if self._sequential is not None:
            self._sequential.close()
            self._sequential = None

    def __enter__(self) -> SwiftReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _range_start(header: str | None) -> int:
    """The first byte of ``Content-Range: bytes 8-11/15``; -1 when there is none."""
    if not header or not header.startswith("bytes "):
        return -1
    first = header[6:].partition("-")[0]
    return int(first) if first.isdigit() else -1


def _swift_time(value: str) -> float:
    """A listing's ``last_modified`` (UTC, ISO 8601 without a zone) as a Unix time."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
