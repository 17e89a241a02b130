"""The audit trail: what Pli decided and did, kept as hash-chained JSON lines.

Redaction by construction: only the events named in ``SCHEMA`` reach the trail, each
with only the fields its schema names, and every value must pass its field's type
check (an address, an id, a number, a MIME type, a name...), or it is written as
``"<redacted>"``. There is no free-text field, so a subject, a body, a file name, an
access code or a link secret has no way in, whatever a caller passes.

Every record carries ``seq``, the ``prev`` hash of the record before it (across file
rotations) and its own ``hash`` (SHA-256 of the record without it), so `pli audit verify`
finds an edited, removed, inserted or reordered record. ``audit.head`` holds the last
sequence number and hash, so records cut from the end are found too. Appends from the
server and from admin commands (other processes) are serialised with ``flock``. The server
writes from a thread of its own, in batches, so the event loop never waits on the file;
what is still queued when it stops is written before it exits (a crash may lose the
records of its last moments, never the chain).

A record is in the file whole or not at all: a write that fails part-way (a full disk
takes what fits and refuses the rest) is cut back to the last whole record, and so is
whatever a crash left unterminated at the end, before the next append. The writer thread
keeps the records a failed write could not take and tries again (``gateway.audit_writer``);
records it had no room to keep are counted in an ``audit.gap`` record.

Files rotate by size or by day (``audit-<first seq>-<YYYYMMDD>.jsonl``, so names sort in
record order) and are deleted once older than the retention period.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import events
from gateway.audit_writer import MAX_WAITING, RETRY_INTERVAL, Gap, Stamped, Writer
from gateway.errors import reply_codes

GENESIS = "0" * 64
HEAD = "audit.head"
LOCK = "audit.lock"
REDACTED = "<redacted>"

_ADDRESS = re.compile(r"^[^\s@<>\"(),;:\\\[\]]{1,64}@[A-Za-z0-9.\-\[\]:_]{1,255}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME = re.compile(r"^[\w.@+-]{1,64}$")
_MIME = re.compile(r"^[a-z0-9.+-]{1,64}/[a-z0-9.+-]{1,128}$")


def _address(v: Any) -> Any:
    if isinstance(v, str) and (v == "" or _ADDRESS.match(v)):
        return v.lower()
    return REDACTED


def _addresses(v: Any) -> Any:
    return [_address(a) for a in v] if isinstance(v, (list, tuple)) else REDACTED


def _id(v: Any) -> Any:
    return v if isinstance(v, str) and _ID.match(v) else (None if v is None else REDACTED)


def _name(v: Any) -> Any:
    return v if isinstance(v, str) and _NAME.match(v) else REDACTED


def _int(v: Any) -> Any:
    return v if isinstance(v, int) and not isinstance(v, bool) else REDACTED


def _ints(v: Any) -> Any:
    return [_int(i) for i in v] if isinstance(v, (list, tuple)) else REDACTED


def _mimes(v: Any) -> Any:
    if not isinstance(v, (list, tuple)):
        return REDACTED
    return [t if isinstance(t, str) and _MIME.match(t) else REDACTED for t in v]


def _ip(v: Any) -> Any:
    try:
        return str(ipaddress.ip_address(str(v)))
    except ValueError:
        return REDACTED


def _reply(v: Any) -> Any:
    """A provider's reply is kept as its codes only: its text is the provider's words."""
    codes = reply_codes(v) if isinstance(v, str) else None
    return codes or REDACTED


def _enum(*allowed: str) -> Callable[[Any], Any]:
    return lambda v: v if v in allowed else REDACTED


_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _timestamp(v: Any) -> Any:
    return v if isinstance(v, str) and _TIMESTAMP.match(v) else REDACTED


def _events(v: Any) -> Any:
    if not isinstance(v, (list, tuple)):
        return REDACTED
    return [e if e in SCHEMA else REDACTED for e in v]


_ACTION = _enum("pass", "protect", "block")
_NOTICE = _enum("opened", "downloaded", "expired", "reply")

# Which events go to the trail, and the only fields each may carry (names: gateway.events).
SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    events.POLICY_DECIDED: {"queue_id": _id, "sender": _address, "recipients": _addresses,
                            "rule": _name, "action": _ACTION, "attachments": _int,
                            "types": _mimes, "sizes": _ints, "size": _int, "link": _id},
    events.POLICY_RELOADED: {"rules": _int},
    events.POLICY_RELOAD_FAILED: {},
    events.USERS_RELOAD_FAILED: {},
    events.TLS_RELOADED: {},
    events.TLS_RELOAD_FAILED: {},
    events.PIPELINE_HEADER_REFUSED: {"queue_id": _id, "user": _name},
    events.SPOOL_QUEUED: {"queue_id": _id, "sender": _address, "recipients": _int,
                          "size": _int, "user": _name, "client": _ip},
    events.DELIVERY_SENT: {"queue_id": _id, "recipient": _address, "reply": _reply},
    events.DELIVERY_DEFERRED: {"queue_id": _id, "recipient": _address, "reply": _reply,
                               "attempts": _int},
    events.DELIVERY_BOUNCED: {"queue_id": _id, "recipient": _address, "reply": _reply},
    events.DELIVERY_EXPIRED: {"queue_id": _id, "recipient": _address},
    events.DSN_QUEUED: {"queue_id": _id, "about": _id, "recipient": _address,
                        "failed": _int},
    events.SPOOL_HELD: {"queue_id": _id, "error": _name},
    events.PORTAL_PAGE: {"link": _id, "outcome": _name, "client": _ip},
    events.PORTAL_CODE_ACCEPTED: {"link": _id, "client": _ip},
    events.PORTAL_CODE_REJECTED: {"link": _id, "client": _ip, "remaining": _int,
                                  "locked": lambda v: v if isinstance(v, bool) else REDACTED},
    events.PORTAL_DOWNLOAD: {"link": _id, "object": _id, "outcome": _name,
                             "client": _ip},
    events.PORTAL_UNAVAILABLE: {"link": _id, "reason": _name, "client": _ip},
    events.PORTAL_CODE_THROTTLED: {"link": _id, "client": _ip},
    events.PORTAL_OPENED: {"link": _id, "client": _ip},
    events.PORTAL_REPLY: {"link": _id, "reply": _id, "files": _int, "bytes": _int,
                          "size": _int, "client": _ip},
    events.PORTAL_REPLY_REFUSED: {"link": _id, "reason": _name, "client": _ip},
    events.PORTAL_MANAGE: {"link": _id, "action": _enum("viewed", "revoked", "extended"),
                           "outcome": _name, "days": _int, "downloads": _int, "client": _ip},
    events.NOTICE_QUEUED: {"queue_id": _id, "link": _id, "notice": _NOTICE,
                           "recipients": _addresses},
    events.NOTICE_FAILED: {"link": _id, "notice": _NOTICE},
    events.ADMIN_USER_ADDED: {"user": _name, "addresses": _addresses},
    events.ADMIN_USER_REMOVED: {"user": _name},
    events.ADMIN_LINK_REVOKED: {"link": _id},
    events.ADMIN_LINK_EXTENDED: {"link": _id, "days": _int, "downloads": _int},
    events.ADMIN_LINKS_PURGED: {"links": _int, "objects": _int},
    events.ADMIN_QUEUE_DELETED: {"queue_id": _id},
    events.ADMIN_QUEUE_FLUSHED: {},
    events.ADMIN_QUEUE_RELEASED: {"queue_id": _id},
    events.VAULT_PURGED: {"links": _int, "objects": _int},
    # Records made while the trail could not be written and too many already waited.
    events.AUDIT_GAP: {"lost": _int, "first": _timestamp, "last": _timestamp,
                       "events": _events},
}


def redact(event: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The record for ``event``, or None when the event is not an audit event."""
    schema = SCHEMA.get(event)
    if schema is None:
        return None
    record: dict[str, Any] = {"event": event}
    for key, check in schema.items():
        if key in fields:
            record[key] = check(fields[key])
    return record


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Retention:
    days: float = 365.0
    max_file_bytes: int = 16 * 1024 * 1024


class AuditTrail:
    def __init__(self, folder: Path, retention: Retention = Retention(),
                 clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.retention = retention
        self.clock = clock
        self._lock = threading.Lock()
        self._writer: Writer | None = None

    def record(self, event: str, /, **fields: Any) -> None:
        record = redact(event, fields)
        if record is None:
            return
        stamped = (self.clock(), record)
        if self._writer is not None:
            self._writer.put(stamped)  # the writer thread chains and writes it
        else:
            self.append([stamped])

    def start_writer(self, *, max_waiting: int = MAX_WAITING,
                     retry_interval: float = RETRY_INTERVAL) -> None:
        """Write from a thread of its own, so the event loop never waits on the file:
        records are chained and written in batches, in the order they were made; while
        the file cannot take them, up to ``max_waiting`` wait and are tried again every
        ``retry_interval`` seconds."""
        if self._writer is None:
            self._writer = Writer(self._append, self._gap_record, max_waiting=max_waiting,
                                  retry_interval=retry_interval)
            self._writer.start()

    @property
    def waiting(self) -> int:
        """Records the writer thread's last try could not write: 0 while all goes well."""
        return self._writer.waiting if self._writer is not None else 0

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def append(self, stamped: list[Stamped]) -> None:
        """Chain and write ``stamped``; raises OSError if not all of it could be written
        (those before the failure are in, whole; the file holds no part of the others)."""
        _written, error = self._append(stamped)
        if error is not None:
            raise error

    def _append(self, stamped: list[Stamped]) -> tuple[int, OSError | None]:
        """Chain and write ``stamped`` in order; how many were written, and the error that
        stopped the others."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._lock, _flocked(self.folder / LOCK):
                on_disk = self.files()  # listed once per batch, not once per record
                if on_disk:
                    _cut_unterminated(on_disk[-1])  # a crash in the middle of a write
                seq, prev = self._head(on_disk)
                by_file: dict[Path, list[str]] = {}
                sizes: dict[Path, int] = {}  # what each file will hold once the batch is in
                for when, record in stamped:
                    seq += 1
                    record = {"seq": seq, "ts": _iso(when), **record, "prev": prev}
                    record["hash"] = prev = _digest(record)
                    path = self._current_file(when, seq, on_disk, by_file, sizes)
                    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
                    by_file.setdefault(path, []).append(line)
                    sizes[path] = sizes.get(path, 0) + len(line)
                written = 0
                for path, lines in by_file.items():  # files in record order
                    try:
                        _append_whole(path, "".join(lines).encode("utf-8"))
                    except OSError as exc:
                        return written, exc
                    written += len(lines)
                with contextlib.suppress(OSError):  # a head that lags is read past
                    self._write_head(seq, prev)
                return written, None
        except OSError as exc:
            return 0, exc

    def _gap_record(self, gap: Gap) -> Stamped:
        record = redact(events.AUDIT_GAP, {"lost": gap.lost, "first": _iso(gap.first),
                                           "last": _iso(gap.last),
                                           "events": sorted(gap.events)})
        assert record is not None
        return gap.last, record

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("audit-*.jsonl"))

    def records(self) -> Iterator[tuple[Path, int, str]]:
        for path in self.files():
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, 1):
                    yield path, number, line

    def expire_old_files(self) -> int:
        """Delete files whose newest record is older than the retention period."""
        if not self.folder.is_dir():
            return 0
        limit = self.clock() - self.retention.days * 86400
        removed = 0
        with self._lock, _flocked(self.folder / LOCK):
            files = self.files()
            for path in files[:-1]:  # the current file is never deleted
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
        return removed

    # -- internals ------------------------------------------------------------------

    def _head(self, files: list[Path]) -> tuple[int, str]:
        """The last record's number and hash: from the head file, unless the newest file
        ends with a later record (a crash between writing records and the head)."""
        head: tuple[int, str] = (0, GENESIS)
        try:
            seq, digest = (self.folder / HEAD).read_text().split()
            head = (int(seq), digest)
        except (FileNotFoundError, ValueError):
            pass
        last = self._last_record(files)
        return last if last is not None and last[0] > head[0] else head

    def _last_record(self, files: list[Path]) -> tuple[int, str] | None:
        if not files:
            return None
        with files[-1].open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            for window in (4096, 65536):  # a record is well under 4 KiB, but never cut one
                handle.seek(max(0, size - window))
                tail = handle.read().rstrip(b"\n")
                if b"\n" in tail or window >= size:
                    break
            tail = tail.rsplit(b"\n", 1)[-1]
        try:
            data = json.loads(tail)
            return int(data["seq"]), str(data["hash"])
        except (ValueError, KeyError, TypeError):
            return None

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.folder / f".{HEAD}.tmp"
        tmp.write_text(f"{seq} {digest}\n")
        os.replace(tmp, self.folder / HEAD)

    def _current_file(self, now: float, seq: int, on_disk: list[Path],
                      pending: dict[Path, list[str]], sizes: dict[Path, int]) -> Path:
        """The file for record ``seq``. ``on_disk`` lists the files before this batch,
        ``pending`` holds the batch's lines not yet written, and ``sizes`` what each file
        will then hold (filled here for a file first seen on disk)."""
        files = sorted({*on_disk, *pending})
        day = time.strftime("%Y%m%d", time.gmtime(now))
        if files:
            latest = files[-1]
            if latest not in sizes:
                sizes[latest] = latest.stat().st_size if latest.exists() else 0
            size = sizes[latest]
            if latest.stem.rsplit("-", 1)[-1] == day and size < self.retention.max_file_bytes:
                return latest
        return self.folder / f"audit-{seq:012d}-{day}.jsonl"


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path``, all of it or none: a write the disk takes only in
    part is cut back to where the file ended, and a file made for it is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        end = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]  # a short write, then ENOSPC
        except OSError:
            with contextlib.suppress(OSError):  # else cut at the next append
                os.ftruncate(fd, end)
                if end == 0:
                    path.unlink()
            raise
    finally:
        os.close(fd)


def _cut_unterminated(path: Path) -> None:
    """Remove what follows the last newline of ``path``: never a whole record."""
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return
            end = start
        handle.truncate(0)


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


# -- verification and reading ----------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f" (record {self.seq})" if self.seq else "")
        return f"{where}: {self.problem}"


def verify(trail: AuditTrail) -> tuple[int, list[Finding]]:
    """Check every record; return how many were read and what is wrong, in order."""
    findings: list[Finding] = []
    prev, expected_seq, count = GENESIS, 1, 0
    for path, number, line in trail.records():
        count += 1
        try:
            record = json.loads(line)
            seq, digest, claimed_prev = int(record["seq"]), record["hash"], record["prev"]
        except (ValueError, KeyError, TypeError):
            findings.append(Finding(path.name, number, None, "not a valid audit record"))
            continue
        if _digest(record) != digest:
            findings.append(Finding(path.name, number, seq,
                                    "edited: its content does not match its hash"))
        if claimed_prev != prev:
            findings.append(Finding(path.name, number, seq,
                                    "the chain is broken before this record: a record was "
                                    "removed, inserted or moved here"))
        if seq != expected_seq:
            what = "removed" if seq > expected_seq else "inserted or moved"
            findings.append(Finding(path.name, number, seq,
                                    f"expected record {expected_seq}: records {what}"))
        prev, expected_seq = digest, seq + 1
    head_seq, head_hash = _read_head(trail.folder)
    if head_seq is not None:
        if head_seq >= expected_seq:
            cut = (f"record {head_seq} was" if head_seq == expected_seq else
                   f"records {expected_seq} to {head_seq} were")
            findings.append(Finding(HEAD, 1, head_seq, f"{cut} removed from the end"))
        elif head_seq == expected_seq - 1 and head_hash != prev:
            findings.append(Finding(HEAD, 1, head_seq,
                                    "the last record does not match the head"))
    return count, findings


def _read_head(folder: Path) -> tuple[int | None, str | None]:
    try:
        seq, digest = (folder / HEAD).read_text().split()
        return int(seq), digest
    except (FileNotFoundError, ValueError):
        return None, None


def story(trail: AuditTrail, *, message: str | None = None,
          link: str | None = None) -> list[dict[str, Any]]:
    """The records about one message (its copies, DSNs and links) or one link, in order."""
    records = []
    for _path, _n, line in trail.records():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    links = {link} if link else set()
    ids: set[str] = set()
    if message:
        for r in records:
            qid = str(r.get("queue_id", ""))
            if qid == message or qid.startswith(message + "-"):
                ids.add(qid)
                if r.get("link"):
                    links.add(r["link"])
        for r in records:
            if r.get("about") in ids:
                ids.add(str(r.get("queue_id")))
    for r in records:  # a link's story goes on along its thread: its replies
        if r.get("link") in links and r.get("reply"):
            links.add(str(r["reply"]))
    return [r for r in records
            if r.get("queue_id") in ids or r.get("about") in ids or r.get("link") in links]
