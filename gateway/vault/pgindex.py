"""The link index on PostgreSQL, shared by several instances (``[vault] index = "postgresql"``).

The same tables and queries as the SQLite index (:mod:`gateway.vault.index`), so a link
behaves the same whichever instance serves it. Every count is changed in one statement,
``UPDATE ... RETURNING``, inside a transaction: PostgreSQL locks the row, and a second
instance asking at the same moment waits and then sees the new count, so a download limit
of 1 gives one download however many instances race for it, and wrong access codes are
counted across instances. Connections come from a small pool per process (psycopg 3).

The schema is Pli's to make: a table ``pli_schema`` holds its version (the same numbers
as SQLite's ``user_version``), and an instance that starts on an empty database makes the
tables, under an advisory lock so that two starting at once do not both try. A database
that has tables of the same names that Pli did not make is refused with a sentence, as
is one written by a newer Pli.

The database holds what SQLite holds: times, counts, addresses, object ids and sizes, the
scrypt hash of the access code and the SHA-256 of the sender's secret. Never a key:
those exist only in the links.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.vault.index import (
    MAX_CODE_ATTEMPTS,
    SCHEMA_VERSION,
    IndexVersionError,
    LinkIndex,
)
from gateway.vault.objects import StoreUnavailable

# The SQLite schema (gateway.vault.index) at version 2, in PostgreSQL's types: times
# are seconds since the epoch (double precision, as SQLite's REAL), flags 0 or 1.
_TABLES: dict[str, str] = {
    "links": """CREATE TABLE links (
    id                 text PRIMARY KEY,
    created            double precision NOT NULL,
    expires            double precision NOT NULL,
    download_limit     integer NOT NULL CHECK (download_limit >= 1),
    downloads          integer NOT NULL DEFAULT 0,
    code_hash          text,
    failed_attempts    integer NOT NULL DEFAULT 0,
    locked             integer NOT NULL DEFAULT 0,
    revoked            double precision,
    sender             text NOT NULL,
    recipients         text NOT NULL,
    origin             text NOT NULL DEFAULT 'practice',
    parent             text,
    language           text NOT NULL DEFAULT 'fr',
    template           text NOT NULL DEFAULT 'default',
    notify             text NOT NULL DEFAULT '',
    opened             double precision,
    expiry_noticed     double precision,
    manage_hash        text,
    max_expires        double precision,
    max_download_limit integer,
    reply_max_files    integer NOT NULL DEFAULT 0,
    reply_max_bytes    bigint NOT NULL DEFAULT 0,
    replies            integer NOT NULL DEFAULT 0
)""",
    "objects": """CREATE TABLE objects (
    link_id   text NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    object_id text NOT NULL,
    size      bigint NOT NULL,
    position  integer NOT NULL,
    downloads integer NOT NULL DEFAULT 0,
    PRIMARY KEY (link_id, object_id)
)""",
}
_INDEXES = ("CREATE INDEX links_expires ON links (expires)",)
VERSION_TABLE = "pli_schema"

# Every column a query reads or writes, by table: what `pli check` looks for.
COLUMNS: dict[str, frozenset[str]] = {
    table: frozenset(re.findall(r"^    ([a-z_]+) ", ddl, re.MULTILINE))
    for table, ddl in _TABLES.items()
}

SCHEMA_LOCK = "schema"
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DEFAULT_POOL_SIZE = 10


class IndexUnavailable(RuntimeError):
    """The database is not one Pli can use (tables it did not make, a lost column)."""


class IndexUnreachable(StoreUnavailable):
    """PostgreSQL could not be reached, or dropped the connection, while the vault was
    using it: nothing was changed, and the caller may try again (the message path
    answers 451, the portal 503), as when the object store is away."""


def lock_key(name: str, schema: str) -> int:
    """A 64-bit advisory lock key for ``name`` in this schema (one per practice's index)."""
    digest = hashlib.sha256(f"pli\0{schema}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _portable(sql: str) -> str:
    """The index's queries use SQLite's ``?``; psycopg takes ``%s`` (and ``%%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection that reads the index's SQL as written for SQLite."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(_portable(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.conn.cursor()
        if rows:
            cursor.executemany(_portable(sql), rows)
        return cursor


class AdvisoryLock:
    """An advisory lock held on one of the pool's connections until :meth:`release`."""

    def __init__(self, index: PostgresIndex, conn: psycopg.Connection[Any], key: int) -> None:
        self._index, self._conn, self._key = index, conn, key

    def release(self) -> None:
        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        finally:
            self._index.pool.putconn(self._conn)


class PostgresIndex(LinkIndex):
    """``conninfo``: a libpq connection string (``host=... port=... dbname=... user=...``);
    ``password``: given apart, so it never sits in a string that could be logged;
    ``schema``: where the tables are (one per practice when several share a database)."""

    for_update = " FOR UPDATE"

    def __init__(
        self,
        conninfo: str,
        *,
        password: str | None = None,
        schema: str = "public",
        max_code_attempts: int = MAX_CODE_ATTEMPTS,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = 10.0,
    ) -> None:
        if not SCHEMA_NAME.match(schema):
            raise ValueError(f"schema {schema!r}: lower-case letters, digits and _ only")
        self.conninfo = conninfo
        self.schema = schema
        self.max_code_attempts = max_code_attempts
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout)),
            "options": f"-c search_path={schema}",
            "application_name": "pli",
        }
        if password is not None:
            kwargs["password"] = password
        self._kwargs = kwargs
        self.pool = ConnectionPool(
            conninfo, kwargs=kwargs, min_size=1, max_size=max(1, pool_size),
            timeout=connect_timeout, name="pli-index", open=False,
            check=ConnectionPool.check_connection)
        self._opened = False

    def describe(self) -> str:
        params = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
        return (f"PostgreSQL {where} database {params.get('dbname', '(default)')}"
                + (f" schema {self.schema}" if self.schema != "public" else ""))

    def close(self) -> None:
        if self._opened:
            self.pool.close()
            self._opened = False

    # -- connections --------------------------------------------------------------------

    @contextmanager
    def _raw(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._opened:
            self.pool.open(wait=False)
            self._opened = True
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.errors.DiskFull as exc:  # the server's disk: 452 4.3.1, as ours
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.describe()) from exc
        except psycopg.OperationalError as exc:  # PoolTimeout is one too
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise IndexUnreachable(f"the link index ({self.describe()}) cannot be used:"
                                   f" {reason}") from exc

    @contextmanager
    def _connect(self) -> Iterator[_Connection]:
        with self._raw() as conn:
            yield _Connection(conn)

    @contextmanager
    def _write(self) -> Iterator[_Connection]:
        with self._raw() as conn, conn.transaction():
            yield _Connection(conn)

    def try_lock(self, name: str) -> AdvisoryLock | None:
        """Take the advisory lock ``name`` if no other instance holds it (never waits):
        the lock, to release once done, or None."""
        key = lock_key(name, self.schema)
        if not self._opened:
            self.pool.open(wait=False)
            self._opened = True
        conn = self.pool.getconn()
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        except BaseException:
            self.pool.putconn(conn)
            raise
        if not (row and row[0]):
            self.pool.putconn(conn)
            return None
        return AdvisoryLock(self, conn, key)

    # -- the schema -----------------------------------------------------------------------

    def probe(self) -> None:
        """Connect once, outside the pool: a server that cannot be reached, a role or a
        password refused, raise psycopg's own OperationalError, which says which."""
        with psycopg.connect(self.conninfo, **self._kwargs) as conn:
            conn.execute("SELECT 1")

    def create_schema(self) -> None:
        """Make the tables on an empty database, check them on one Pli made."""
        self.probe()
        with self._write() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(SCHEMA_LOCK, self.schema),))
            if self.schema != "public":
                db.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            version = self._version(db)
            if version is None:
                self._refuse_foreign_tables(db)
                for ddl in (*_TABLES.values(), *_INDEXES):
                    db.execute(ddl)
                db.execute(f"CREATE TABLE {VERSION_TABLE} (version integer NOT NULL)")
                db.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (?)",
                           (SCHEMA_VERSION,))
                return
            if version > SCHEMA_VERSION:
                raise IndexVersionError(
                    f"{self.describe()} has schema version {version}, newer than this"
                    f" Pli's ({SCHEMA_VERSION}): run the Pli that wrote it")
            if version < SCHEMA_VERSION:  # no older PostgreSQL schema was ever written
                raise IndexUnavailable(
                    f"{self.describe()}: {VERSION_TABLE} says version {version}, which no"
                    " Pli wrote on PostgreSQL")
        problems = self.problems()
        if problems:
            raise IndexUnavailable("; ".join(problems))

    def _version(self, db: _Connection) -> int | None:
        found = db.execute("SELECT to_regclass(?)", (VERSION_TABLE,)).fetchone()
        if found is None or found[0] is None:
            return None
        rows = db.execute(f"SELECT version FROM {VERSION_TABLE}").fetchall()
        if len(rows) != 1:
            raise IndexUnavailable(
                f"{self.describe()}: table {VERSION_TABLE} should hold one row (the"
                f" schema's version) and holds {len(rows)}")
        return int(rows[0][0])

    def _refuse_foreign_tables(self, db: _Connection) -> None:
        for table in _TABLES:
            found = db.execute("SELECT to_regclass(?)", (table,)).fetchone()
            if found is not None and found[0] is not None:
                raise IndexUnavailable(
                    f"{self.describe()} already has a table {table!r} that Pli did not"
                    f" make (there is no {VERSION_TABLE} table): give Pli a database or a"
                    " schema of its own")

    def problems(self) -> list[str]:
        """What would stop Pli from using this database, in sentences (for `pli check`):
        nothing when it cannot even be reached is said by the OperationalError."""
        found: list[str] = []
        with self._connect() as db:
            version = self._version(db)
            if version is None:
                for table in _TABLES:
                    row = db.execute("SELECT to_regclass(?)", (table,)).fetchone()
                    if row is not None and row[0] is not None:
                        found.append(
                            f"{self.describe()}: table {table!r} was not made by Pli (no"
                            f" {VERSION_TABLE} table): give Pli a database or a schema of"
                            " its own")
                return found
            if version != SCHEMA_VERSION:
                found.append(f"{self.describe()}: schema version {version}, this Pli"
                             f" reads {SCHEMA_VERSION}")
                return found
            for table, wanted in COLUMNS.items():
                have = {name for (name,) in db.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = ? AND table_name = ?", (self.schema, table))}
                if not have:
                    found.append(f"{self.describe()}: table {table!r} is missing (the"
                                 f" schema says version {version}): restore it from a"
                                 " backup, or drop pli_schema to make the tables anew")
                    continue
                missing = sorted(wanted - have)
                if missing:
                    found.append(f"{self.describe()}: table {table!r} lacks the column(s)"
                                 f" {', '.join(missing)}: it is not the table Pli made")
        return found


def index_error(exc: BaseException) -> str | None:
    """A sentence for what stops Pli from using its PostgreSQL index, or None when
    ``exc`` is something else (a bug, to be raised as it is)."""
    if isinstance(exc, (IndexUnavailable, IndexVersionError, IndexUnreachable)):
        return str(exc)
    if isinstance(exc, psycopg.OperationalError):
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"cannot use PostgreSQL: {reason}"
    if isinstance(exc, PoolTimeout):
        return "PostgreSQL gave no connection in time (is the server up, the pool too small?)"
    if isinstance(exc, psycopg.Error):
        return f"PostgreSQL refused: {' '.join(str(exc).split())}"
    return None
