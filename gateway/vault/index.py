"""The link index: what the server needs to enforce a link's limits, and nothing more.

By default one SQLite file (WAL, ``synchronous=FULL``) beside the objects
(:class:`SqliteIndex`); for several instances, a PostgreSQL database they share
(:mod:`gateway.vault.pgindex`), with the same tables and the same queries. A row holds a link's id,
times, its download limit (per document), the access code's scrypt hash, failed
attempts, the sender and recipient addresses, and its objects' ids, sizes and download
counts: never a subject, a name, a body or a key. Every call opens its own connection
(or takes one from PostgreSQL's pool), so threads (the server) and other processes
(``pli links``, other instances) share the index safely; counters change by ``UPDATE
... RETURNING`` in a transaction, and a change that reads then writes locks first
(SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's ``SELECT ... FOR UPDATE``).

The schema's version is SQLite's ``user_version``. Version 0 (before any was set)
counted downloads per link; version 1 counts them per document. An index of version 0
is brought up to 1 when it is opened, in one transaction: each document starts with the
count its link had, so no document of an existing link allows more downloads than
before, and a link that was used up stays used up.

Version 2 adds what happens after sending (columns of ``links``, see
:class:`LinkOptions`): the notices the sender asked for and whether the message was
opened (and the link's expiry noticed), the SHA-256 of the sender's own secret (the
link to revoke or extend; the secret itself is never stored), how far the sender may
extend the expiry and the downloads, the bounds of a secure reply and the replies made,
and, for a reply, who wrote it (``origin``: "practice" or "patient") and the link it
answers (``parent``). A link of version 1 is brought up with none of these: no notice,
no sender's link, no reply.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from gateway.diskfull import sqlite_errors_as_os_errors
from gateway.vault.format import MANIFEST_OBJECT_ID

MAX_CODE_ATTEMPTS = 5
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1

LinkStatus = Literal["ok", "unknown", "expired", "revoked", "exhausted", "locked"]

SCHEMA_VERSION = 2

# links.download_limit: downloads allowed for each document; links.downloads: downloads
# granted, all documents together; objects.downloads: those of one document (the
# manifest's stays 0: reading the message is not a download).
_SCHEMA = (
    """CREATE TABLE links (
    id              TEXT PRIMARY KEY,
    created         REAL NOT NULL,
    expires         REAL NOT NULL,
    download_limit  INTEGER NOT NULL CHECK (download_limit >= 1),
    downloads       INTEGER NOT NULL DEFAULT 0,
    code_hash       TEXT,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked          INTEGER NOT NULL DEFAULT 0,
    revoked         REAL,
    sender          TEXT NOT NULL,
    recipients      TEXT NOT NULL
)""",
    """CREATE TABLE objects (
    link_id   TEXT NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    object_id TEXT NOT NULL,
    size      INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    downloads INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (link_id, object_id)
)""",
    "CREATE INDEX links_expires ON links (expires)",
)

# From version 0, which had no objects.downloads: every document starts where its link was.
_MIGRATE_FROM_0 = (
    "ALTER TABLE objects ADD COLUMN downloads INTEGER NOT NULL DEFAULT 0",
    (
        "UPDATE objects SET downloads = (SELECT min(links.downloads, links.download_limit)"
        " FROM links WHERE links.id = objects.link_id)"
        f" WHERE object_id != '{MANIFEST_OBJECT_ID}'"
    ),
)


# From version 1: what a link keeps of what happens after sending. A reply (origin
# "patient") answers its parent; notify lists the events the sender is told about.
_MIGRATE_FROM_1 = (
    "ALTER TABLE links ADD COLUMN origin TEXT NOT NULL DEFAULT 'practice'",
    "ALTER TABLE links ADD COLUMN parent TEXT",
    "ALTER TABLE links ADD COLUMN language TEXT NOT NULL DEFAULT 'fr'",
    "ALTER TABLE links ADD COLUMN template TEXT NOT NULL DEFAULT 'default'",
    "ALTER TABLE links ADD COLUMN notify TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE links ADD COLUMN opened REAL",
    "ALTER TABLE links ADD COLUMN expiry_noticed REAL",
    "ALTER TABLE links ADD COLUMN manage_hash TEXT",
    "ALTER TABLE links ADD COLUMN max_expires REAL",
    "ALTER TABLE links ADD COLUMN max_download_limit INTEGER",
    "ALTER TABLE links ADD COLUMN reply_max_files INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE links ADD COLUMN reply_max_bytes INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE links ADD COLUMN replies INTEGER NOT NULL DEFAULT 0",
)

EXPIRY_NOTICE_GRACE = 7 * 86400.0
"""A link whose expiry notice is still to be sent is kept past its expiry (so the notice
can name it) for at most this long; then it is purged whether or not it went."""

_PENDING_EXPIRY_NOTICE = (
    "(notify LIKE '%expired%' AND opened IS NULL AND revoked IS NULL"
    " AND expiry_noticed IS NULL AND origin = 'practice')"
)


class UnknownLink(LookupError):
    """No link with this id (never created, discarded or purged)."""


class IndexVersionError(RuntimeError):
    """The index was written by a newer Pli, whose schema this one does not know."""


@dataclass(frozen=True)
class StoredObject:
    """``downloads``: how many times this document was downloaded (0 for the manifest)."""

    id: str
    size: int
    downloads: int = 0


@dataclass(frozen=True)
class LinkOptions:
    """What a link keeps besides its limits: the language and template of the notices
    about it, the events its sender is told about, how far the sender may extend its
    expiry (a time) and each document's downloads, and the bounds of a secure reply from
    its page (0 files and 0 bytes: none)."""

    language: str = "fr"
    template: str = "default"
    notify: tuple[str, ...] = ()
    max_expires: float | None = None
    max_download_limit: int | None = None
    reply_max_files: int = 0
    reply_max_bytes: int = 0


@dataclass(frozen=True)
class LinkInfo:
    """One row of the index. ``recipients`` are addresses; ``objects`` lists the manifest
    first, then the files in the order they were sealed. ``download_limit`` applies to
    each document; ``downloads`` is the total granted, all documents together."""

    id: str
    created: float
    expires: float
    download_limit: int
    downloads: int
    has_code: bool
    failed_attempts: int
    locked: bool
    revoked: float | None
    sender: str
    recipients: tuple[str, ...]
    objects: tuple[StoredObject, ...]
    origin: str = "practice"
    parent: str | None = None
    options: LinkOptions = LinkOptions()
    opened: float | None = None
    has_manage: bool = False
    replies: int = 0

    @property
    def files(self) -> tuple[StoredObject, ...]:
        """The documents: every object but the manifest."""
        return tuple(o for o in self.objects if o.id != MANIFEST_OBJECT_ID)

    def downloads_left(self, document: StoredObject) -> int:
        return max(0, self.download_limit - document.downloads)

    @property
    def replies_allowed(self) -> bool:
        """Whether its page offers a secure reply (the link must also be usable)."""
        return self.options.reply_max_bytes > 0

    @property
    def max_expires(self) -> float:
        return max(self.expires, self.options.max_expires or self.expires)

    @property
    def max_download_limit(self) -> int:
        return max(self.download_limit, self.options.max_download_limit or 0)

    def status(self, now: float) -> LinkStatus:
        """"exhausted" once every document is used up; a link without documents (a
        message whose body alone was protected) is never used up, only expires."""
        if self.revoked is not None:
            return "revoked"
        if now >= self.expires:
            return "expired"
        if self.locked:
            return "locked"
        files = self.files
        if files and not any(self.downloads_left(f) for f in files):
            return "exhausted"
        return "ok"


@dataclass(frozen=True)
class CodeCheck:
    """The answer to an access code: accepted or not, tries left, and whether the link
    is now locked (then even the right code is refused)."""

    ok: bool
    remaining: int
    locked: bool


@dataclass(frozen=True)
class Purged:
    links: int = 0
    objects: int = 0
    bytes: int = 0


def hash_manage_secret(secret: bytes) -> str:
    """The sender's secret is 32 random bytes: a plain SHA-256 keeps it unguessable from
    the index (a slow hash is for short codes a person types)."""
    return hashlib.sha256(b"pli manage v1\0" + secret).hexdigest()


def normalise_code(code: str) -> str:
    """Spaces and dashes do not count, nor does letter case: "48 21" is "4821"."""
    return "".join(code.split()).replace("-", "").upper()


def hash_code(code: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(normalise_code(code), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest))
    )


def verify_code(code: str, stored: str) -> bool:
    """Constant time in the code: the digests are compared with ``hmac.compare_digest``."""
    scheme, n, r, p, salt, expected = stored.split("$")
    if scheme != "scrypt":
        raise ValueError("unknown access code hash")
    digest = _scrypt(normalise_code(code), base64.b64decode(salt), int(n), int(r), int(p))
    return hmac.compare_digest(digest, base64.b64decode(expected))


def _scrypt(code: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(code.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class HeldLock(Protocol):
    def release(self) -> None: ...


class _OwnLock:
    def release(self) -> None:
        pass


class LinkIndex(ABC):
    """The index's queries, in SQL that SQLite and PostgreSQL read alike (``?`` for a
    parameter). A subclass says where the rows are: :class:`SqliteIndex` (the default,
    one file beside the objects) or :class:`gateway.vault.pgindex.PostgresIndex` (shared
    by several instances). Counters are changed by ``UPDATE ... RETURNING`` or under a row
    lock, inside a transaction, so limits hold exactly whoever asks at once."""

    max_code_attempts: int
    for_update = ""
    """What a SELECT that is followed by an UPDATE of its row adds, to lock the row."""

    @abstractmethod
    def create_schema(self) -> None:
        """Make the tables, or bring older ones up to this Pli's schema."""

    @abstractmethod
    def describe(self) -> str:
        """Where the index is, for messages (never a password)."""

    @abstractmethod
    def close(self) -> None:
        """Give back what the index holds open (connections); it is not used again."""

    def try_lock(self, name: str) -> HeldLock | None:
        """Take the lock ``name`` (the hourly purge) unless another instance holds it:
        the lock to release once done, or None. One index file has one instance."""
        return _OwnLock()

    @abstractmethod
    def _connect(self) -> contextlib.AbstractContextManager[Any]:
        """A connection for reading."""

    @abstractmethod
    def _write(self) -> contextlib.AbstractContextManager[Any]:
        """A connection inside a transaction, committed when the block ends."""

    # -- writing ----------------------------------------------------------------------

    def create(
        self,
        link_id: str,
        *,
        created: float,
        expires: float,
        download_limit: int,
        code_hash: str | None,
        sender: str,
        recipients: Sequence[str],
        objects: Sequence[StoredObject],
        options: LinkOptions = LinkOptions(),
        manage_hash: str | None = None,
    ) -> None:
        if download_limit < 1:
            raise ValueError("a link allows at least one download")
        with self._write() as db:
            db.execute(
                "INSERT INTO links (id, created, expires, download_limit, code_hash, sender,"
                " recipients) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (link_id, created, expires, download_limit, code_hash, sender,
                 json.dumps(list(recipients), ensure_ascii=False)),
            )
            _set_options(db, link_id, options, manage_hash)
            db.executemany(
                "INSERT INTO objects (link_id, object_id, size, position) VALUES (?, ?, ?, ?)",
                [(link_id, o.id, o.size, i) for i, o in enumerate(objects)],
            )

    def create_reply(
        self, parent_id: str, reply_id: str, *, created: float,
        objects: Sequence[StoredObject], max_replies: int,
    ) -> bool:
        """A reply written from ``parent_id``'s page, in one transaction with the count of
        its parent's replies: False (and nothing made) when the parent is no longer
        usable (expired, revoked, locked, gone) or has had ``max_replies`` already. The
        reply goes the other way along the thread (its ``origin`` is the other side's),
        keeps its parent's addresses, access code, download limit, notices' language and
        template and reply bounds, and lasts as long as its parent was made to last."""
        with self._write() as db:
            counted = db.execute(
                "UPDATE links SET replies = replies + 1 WHERE id = ? AND replies < ?"
                " AND revoked IS NULL AND locked = 0 AND expires > ? AND reply_max_bytes > 0",
                (parent_id, max_replies, created),
            ).rowcount
            if not counted:
                return False
            db.execute(
                "INSERT INTO links (id, created, expires, download_limit, code_hash, sender,"
                " recipients, origin, parent, language, template, notify, max_expires,"
                " max_download_limit, reply_max_files, reply_max_bytes)"
                " SELECT ?, ?, ? + (expires - created), download_limit, code_hash, sender,"
                " recipients, CASE origin WHEN 'practice' THEN 'patient' ELSE 'practice' END,"
                " id, language, template, notify, ? + (COALESCE(max_expires, expires) - created),"
                " max_download_limit, reply_max_files, reply_max_bytes FROM links WHERE id = ?",
                (reply_id, created, created, created, parent_id),
            )
            db.executemany(
                "INSERT INTO objects (link_id, object_id, size, position) VALUES (?, ?, ?, ?)",
                [(reply_id, o.id, o.size, i) for i, o in enumerate(objects)],
            )
        return True

    def uncount_reply(self, link_id: str) -> None:
        """A reply counted by :meth:`create_reply` was discarded after all."""
        with self._write() as db:
            db.execute("UPDATE links SET replies = CASE WHEN replies > 0 THEN replies - 1"
                       " ELSE 0 END WHERE id = ?", (link_id,))

    def mark_opened(self, link_id: str, now: float) -> bool:
        """Note the first time the message was read: True only that first time, whoever
        else marks it at once (so the sender is told once)."""
        with self._write() as db:
            return bool(db.execute(
                "UPDATE links SET opened = ? WHERE id = ? AND opened IS NULL", (now, link_id)
            ).rowcount > 0)

    def manage_matches(self, link_id: str, secret: bytes) -> bool:
        """Whether ``secret`` is the sender's secret of this link (compared in constant
        time, on hashes); False for a link without one."""
        with self._connect() as db:
            row = db.execute("SELECT manage_hash FROM links WHERE id = ?",
                             (link_id,)).fetchone()
        if row is None or row[0] is None:
            return False
        return hmac.compare_digest(hash_manage_secret(secret).encode(), row[0].encode())

    def extend(self, link_id: str, *, seconds: float, downloads: int, now: float,
               bounded: bool) -> bool:
        """Push the expiry ``seconds`` later (from now, for a link that had expired) and
        allow each document ``downloads`` more; ``bounded``: no further than the sender
        may go (the link's maxima). False for an unknown or revoked link."""
        if seconds < 0 or downloads < 0:
            raise ValueError("a link is extended, never shortened")
        with self._write() as db:
            row = db.execute(
                "SELECT expires, download_limit, COALESCE(max_expires, expires),"
                " COALESCE(max_download_limit, download_limit) FROM links"
                " WHERE id = ? AND revoked IS NULL" + self.for_update, (link_id,)).fetchone()
            if row is None:
                return False
            expires, limit, most_expires, most_limit = row
            new_expires = (max(expires, now) + seconds) if seconds else expires
            new_limit = limit + downloads
            if bounded:
                new_expires = max(expires, min(new_expires, most_expires))
                new_limit = max(limit, min(new_limit, most_limit))
            db.execute(
                "UPDATE links SET expires = ?, download_limit = ?,"
                " expiry_noticed = CASE WHEN ? > ? THEN NULL ELSE expiry_noticed END"
                " WHERE id = ?", (new_expires, new_limit, new_expires, now, link_id))
        return True

    def expired_unopened(self, now: float) -> list[str]:
        """Links whose sender asked to be told when they expire unopened, and is not yet."""
        with self._connect() as db:
            return [row[0] for row in db.execute(
                f"SELECT id FROM links WHERE expires <= ? AND {_PENDING_EXPIRY_NOTICE}"
                " ORDER BY expires, id", (now,))]

    def mark_expiry_noticed(self, link_id: str, now: float) -> bool:
        """True for whoever notes it first (the notice is queued once)."""
        with self._write() as db:
            return bool(db.execute(
                "UPDATE links SET expiry_noticed = ? WHERE id = ? AND expiry_noticed IS NULL",
                (now, link_id)).rowcount > 0)

    def unmark_expiry_noticed(self, link_id: str) -> None:
        """The notice could not be queued after all: the next run tries again."""
        with self._write() as db:
            db.execute("UPDATE links SET expiry_noticed = NULL WHERE id = ?", (link_id,))

    def delete(self, link_id: str) -> bool:
        with self._write() as db:
            return bool(db.execute("DELETE FROM links WHERE id = ?", (link_id,)).rowcount > 0)

    def revoke(self, link_id: str, now: float) -> bool:
        """Mark a link revoked (its objects go at the next purge). False if unknown."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE links SET revoked = COALESCE(revoked, ?) WHERE id = ?", (now, link_id)
            )
            return bool(cursor.rowcount > 0)

    def grant_download(self, link_id: str, object_id: str, now: float) -> int | None:
        """Count one download of one document, in one transaction: the downloads that
        document has left after this one, or None (and nothing counted) when it has none
        left, or the link is expired, revoked or locked, or has no such document. Racing
        callers are served one at a time, so the limit holds exactly."""
        if object_id == MANIFEST_OBJECT_ID:
            return None
        with self._write() as db:
            counted = db.execute(
                "UPDATE objects SET downloads = downloads + 1"
                " WHERE link_id = ? AND object_id = ? AND downloads < ("
                "SELECT download_limit FROM links WHERE id = ? AND revoked IS NULL"
                " AND locked = 0 AND expires > ?) RETURNING downloads",
                (link_id, object_id, link_id, now),
            ).fetchall()
            if not counted:
                return None
            [(limit,)] = db.execute(
                "UPDATE links SET downloads = downloads + 1 WHERE id = ?"
                " RETURNING download_limit", (link_id,),
            ).fetchall()
        return max(0, int(limit) - int(counted[0][0]))

    def check_code(self, link_id: str, code: str) -> CodeCheck:
        """Check an access code, at most ``max_code_attempts`` wrong ones in the link's life.

        An attempt is counted *before* the (slow) scrypt comparison and given back if the
        code was right, so guesses sent in parallel cannot exceed the limit either."""
        limit = self.max_code_attempts
        with self._write() as db:
            counted = db.execute(
                "UPDATE links SET failed_attempts = failed_attempts + 1,"
                " locked = CASE WHEN failed_attempts + 1 >= ? THEN 1 ELSE 0 END"
                " WHERE id = ? AND code_hash IS NOT NULL AND locked = 0"
                " AND failed_attempts < ? RETURNING code_hash, failed_attempts",
                (limit, link_id, limit),
            ).fetchall()
        if not counted:
            with self._connect() as db:
                row = db.execute("SELECT code_hash IS NOT NULL FROM links WHERE id = ?",
                                 (link_id,)).fetchone()
            if row is None:
                raise UnknownLink(link_id)
            if not row[0]:
                return CodeCheck(ok=True, remaining=limit, locked=False)
            return CodeCheck(ok=False, remaining=0, locked=True)
        [(stored, failed)] = counted
        if not verify_code(code, stored):
            return CodeCheck(ok=False, remaining=max(0, limit - failed), locked=failed >= limit)
        with self._write() as db:
            # Give the attempt back (right-hand sides see the values before the update).
            row = db.execute(
                "UPDATE links SET failed_attempts = CASE WHEN failed_attempts > 0"
                " THEN failed_attempts - 1 ELSE 0 END,"
                " locked = CASE WHEN failed_attempts - 1 >= ? THEN 1 ELSE 0 END WHERE id = ?"
                " RETURNING failed_attempts",
                (limit, link_id),
            ).fetchone()
        return CodeCheck(ok=True, remaining=max(0, limit - (row[0] if row else 0)), locked=False)

    # -- reading ----------------------------------------------------------------------

    def get(self, link_id: str) -> LinkInfo | None:
        with self._connect() as db:
            row = db.execute(_SELECT + " WHERE id = ?", (link_id,)).fetchone()
            return None if row is None else _info(db, row)

    def links(self) -> list[LinkInfo]:
        with self._connect() as db:
            rows = db.execute(_SELECT + " ORDER BY created, id").fetchall()
            return [_info(db, row) for row in rows]

    def ids(self) -> set[str]:
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT id FROM links")}

    def purgeable(self, now: float) -> list[str]:
        """Links whose objects must go: expired or revoked (an expired one whose expiry
        notice is still to be sent waits for it, a week at most)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id FROM links WHERE revoked IS NOT NULL OR (expires <= ? AND NOT"
                f" ({_PENDING_EXPIRY_NOTICE} AND expires > ?)) ORDER BY id",
                (now, now - EXPIRY_NOTICE_GRACE),
            )
            return [row[0] for row in rows]


class SqliteIndex(LinkIndex):
    """The embedded index: one SQLite file (WAL, ``synchronous=FULL``)."""

    def __init__(self, path: Path, *, max_code_attempts: int = MAX_CODE_ATTEMPTS) -> None:
        self.path = path
        self.max_code_attempts = max_code_attempts

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        """Nothing to give back: each call opens and closes its own connection."""

    def create_schema(self) -> None:
        """Create the index, or bring an existing one up to :data:`SCHEMA_VERSION`."""
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise IndexVersionError(
                    f"{self.path} has schema version {version}, newer than this Pli's"
                    f" ({SCHEMA_VERSION}): run the Pli that wrote it")
            tables = {name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            steps: tuple[str, ...]
            if "objects" not in tables:
                steps = _SCHEMA + _MIGRATE_FROM_1
            elif version == 0:
                steps = _MIGRATE_FROM_0 + _MIGRATE_FROM_1
            else:
                steps = _MIGRATE_FROM_1
            for statement in steps:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection; a full disk met while using it is raised as OSError (ENOSPC), as
        a file write says it, so the message path answers 452 4.3.1 for both."""
        with sqlite_errors_as_os_errors(self.path):
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
                yield db
            finally:
                db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the lock from its first read."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (disk full)
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


_SELECT = (
    "SELECT id, created, expires, download_limit, downloads, code_hash IS NOT NULL,"
    " failed_attempts, locked, revoked, sender, recipients, origin, parent, language,"
    " template, notify, opened, manage_hash IS NOT NULL, max_expires, max_download_limit,"
    " reply_max_files, reply_max_bytes, replies FROM links"
)


def _set_options(db: Any, link_id: str, options: LinkOptions,
                 manage_hash: str | None) -> None:
    db.execute(
        "UPDATE links SET language = ?, template = ?, notify = ?, manage_hash = ?,"
        " max_expires = ?, max_download_limit = ?, reply_max_files = ?, reply_max_bytes = ?"
        " WHERE id = ?",
        (options.language, options.template, ",".join(options.notify), manage_hash,
         options.max_expires, options.max_download_limit, options.reply_max_files,
         options.reply_max_bytes, link_id))


def _info(db: Any, row: tuple[Any, ...]) -> LinkInfo:
    (link_id, created, expires, limit, downloads, has_code, failed, locked, revoked, sender,
     recipients, origin, parent, language, template, notify, opened, has_manage, max_expires,
     max_limit, reply_files, reply_bytes, replies) = row
    objects = tuple(
        StoredObject(object_id, size, downloads)
        for object_id, size, downloads in db.execute(
            "SELECT object_id, size, downloads FROM objects WHERE link_id = ? ORDER BY position",
            (link_id,),
        )
    )
    return LinkInfo(
        id=link_id,
        created=created,
        expires=expires,
        download_limit=limit,
        downloads=downloads,
        has_code=bool(has_code),
        failed_attempts=failed,
        locked=bool(locked),
        revoked=revoked,
        sender=sender,
        recipients=tuple(json.loads(recipients)),
        objects=objects,
        origin=origin,
        parent=parent,
        options=LinkOptions(
            language=language, template=template,
            notify=tuple(e for e in notify.split(",") if e),
            max_expires=max_expires, max_download_limit=max_limit,
            reply_max_files=reply_files, reply_max_bytes=reply_bytes),
        opened=opened,
        has_manage=bool(has_manage),
        replies=replies,
    )
