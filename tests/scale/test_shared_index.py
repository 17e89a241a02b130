"""The PostgreSQL link index as two instances see it: two processes' pools on one
database, each with its own connections. Limits hold across them, one purges at a time,
the schema is made once, and a database Pli cannot use is said in a sentence."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.vault import IndexVersionError, Vault
from gateway.vault.index import SCHEMA_VERSION
from gateway.vault.pgindex import IndexUnavailable, PostgresIndex
from tests.engines import Postgres
from tests.support import make_gateway
from tests.vault.helpers import seal

Pair = tuple[Vault, Vault]


@pytest.fixture
def schema(postgres: Postgres) -> Iterator[str]:
    name = postgres.new_schema()
    yield name
    postgres.drop_schema(name)


@pytest.fixture
def indexes(postgres: Postgres, schema: str) -> Iterator[Callable[[], PostgresIndex]]:
    made: list[PostgresIndex] = []

    def new() -> PostgresIndex:
        made.append(PostgresIndex(postgres.conninfo, schema=schema, pool_size=4))
        return made[-1]
    yield new
    for index in made:
        index.close()


@pytest.fixture
def pair(indexes: Callable[[], PostgresIndex], tmp_path: Path) -> Pair:
    """Two instances' vaults: one object folder, one database, two pools."""
    return (Vault(tmp_path / "vault", index=indexes()),
            Vault(tmp_path / "vault", index=indexes()))


def race(calls: list[Callable[[], object]]) -> list[object]:
    answers: list[object] = []
    start = threading.Barrier(len(calls))

    def one(call: Callable[[], object]) -> None:
        start.wait()
        answers.append(call())

    threads = [threading.Thread(target=one, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def test_a_limit_of_one_is_one_download_across_two_instances(pair: Pair) -> None:
    a, b = pair
    link = seal(a, download_limit=1)
    info = b.get(link.id)
    assert info is not None
    document = info.files[0].id
    answers = race([lambda v=v: v.grant_download(link.id, document)  # type: ignore[misc]
                    for v in (a, b) * 10])
    assert sorted(answers, key=lambda x: x is None) == [0] + [None] * 19
    for vault in pair:
        after = vault.get(link.id)
        assert after is not None and after.files[0].downloads == 1
        assert vault.status(link.id) == "exhausted"


def test_wrong_codes_are_counted_across_instances(pair: Pair) -> None:
    a, b = pair
    link = seal(a, code="4821")
    answers = race([lambda v=v, n=n: v.check_code(link.id, f"{n:04d}")  # type: ignore[misc]
                    for n, v in enumerate((a, b) * 6)])
    assert sum(1 for r in answers if r.remaining == 0 and r.locked) >= 1  # type: ignore[attr-defined]
    for vault in pair:
        info = vault.get(link.id)
        assert info is not None and info.locked and info.failed_attempts == 5
        assert not vault.check_code(link.id, "4821").ok


def test_one_instance_at_a_time_holds_the_purge(pair: Pair) -> None:
    a, b = pair
    held = a.index.try_lock("purge")
    assert held is not None
    assert b.index.try_lock("purge") is None
    other = a.index.try_lock("another")  # each lock on its own
    assert other is not None
    other.release()
    held.release()
    again = b.index.try_lock("purge")
    assert again is not None
    again.release()


def test_two_instances_starting_at_once_make_the_schema_once(
        indexes: Callable[[], PostgresIndex]) -> None:
    first, second, third = indexes(), indexes(), indexes()
    errors = race([first.create_schema, second.create_schema, third.create_schema])
    assert errors == [None, None, None]
    with first._connect() as db:
        assert db.execute("SELECT version FROM pli_schema").fetchall() == [(SCHEMA_VERSION,)]
    assert first.problems() == []


def test_a_table_pli_did_not_make_is_refused_with_a_sentence(
        indexes: Callable[[], PostgresIndex]) -> None:
    index = indexes()
    with index._write() as db:
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {index.schema}")
        db.execute("CREATE TABLE links (id text PRIMARY KEY, owner text)")
    with pytest.raises(IndexUnavailable, match="already has a table 'links' that Pli did not"
                       " make"):
        index.create_schema()
    [problem] = index.problems()
    assert "table 'links' was not made by Pli" in problem


def test_a_table_that_lost_a_column_and_a_newer_schema_are_said(
        indexes: Callable[[], PostgresIndex]) -> None:
    index = indexes()
    index.create_schema()
    with index._write() as db:
        db.execute("ALTER TABLE objects DROP COLUMN downloads")
    assert index.problems() == [f"{index.describe()}: table 'objects' lacks the column(s)"
                                " downloads: it is not the table Pli made"]
    with pytest.raises(IndexUnavailable, match="lacks the column"):
        index.create_schema()
    with index._write() as db:
        db.execute("UPDATE pli_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(IndexVersionError, match="newer than this Pli's"):
        index.create_schema()


def _pli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_pli_check_reports_the_index_it_cannot_use(postgres: Postgres, schema: str,
                                                   tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    base = gw.config.read_text()
    gw.config.write_text(base + postgres.toml(schema))
    checked = _pli("check", "-c", str(gw.config))
    assert checked.returncode == 0, checked.stderr
    assert "link index postgresql" in checked.stdout  # an empty database is made at start

    index = PostgresIndex(postgres.conninfo, schema=schema)
    try:
        index.create_schema()
        with index._write() as db:
            db.execute("ALTER TABLE links DROP COLUMN expires")
    finally:
        index.close()
    checked = _pli("check", "-c", str(gw.config))
    assert checked.returncode == 1
    assert "the link index: PostgreSQL 127.0.0.1" in checked.stderr
    assert "table 'links' lacks the column(s) expires" in checked.stderr

    unreachable = base + postgres.toml(schema).replace(f"port = {postgres.port}", "port = 1")
    gw.config.write_text(unreachable)
    checked = _pli("check", "-c", str(gw.config))
    assert checked.returncode == 1
    assert "the link index: cannot use PostgreSQL: connection failed" in checked.stderr


@pytest.mark.parametrize(("tables", "said"), [
    ('[vault]\nindex = "postgresql"\n', 'needs a [vault.postgresql] table'),
    ('[vault.postgresql]\nhost = "db"\ndbname = "pli"\nuser = "pli"\n',
     'index = "sqlite": set index = "postgresql"'),
    ('[vault]\nindex = "postgresql"\n[vault.postgresql]\ndsn = "postgresql://pli:secret@db/pli"\n',
     "dsn holds a password"),
    ('[vault]\nindex = "postgresql"\n[vault.postgresql]\nhost = "db"\n',
     "host needs dbname and user"),
    ('[vault]\nindex = "mysql"\n', "vault.index"),
    ('[vault]\nindex = "postgresql"\n[vault.postgresql]\ndsn = "host=db"\nschema = "Pli-1"\n',
     "lower-case letters"),
])
def test_bad_index_settings_are_said_with_the_setting(tmp_path: Path, tables: str,
                                                      said: str) -> None:
    gw = make_gateway(tmp_path / "pli")
    gw.config.write_text(gw.config.read_text() + "\n" + tables)
    with pytest.raises(ConfigError, match="vault") as caught:
        load_settings(gw.config)
    assert said in str(caught.value)


def test_a_short_or_missing_signing_key_is_a_configuration_error(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    key = tmp_path / "pli" / "portal-key"
    gw.config.write_text(gw.config.read_text().replace(
        "[portal]", '[portal]\nkey_file = "portal-key"', 1))
    with pytest.raises(ConfigError, match="cannot read the signing key"):
        gw.settings().portal.signing_key()
    key.write_text("short\n")
    with pytest.raises(ConfigError, match="fewer than 32"):
        gw.settings().portal.signing_key()
    key.write_text("x" * 44 + "\n")
    assert gw.settings().portal.signing_key() == b"x" * 44


def test_every_metric_says_which_instance_it_comes_from() -> None:
    lines = [line for line in Metrics(queue=lambda: (0, 0.0), instance="pli-b").render()
             .splitlines() if line and not line.startswith("#")]
    assert lines and all('{instance="pli-b"' in line for line in lines)
    assert 'pli_messages_decided_total{instance="pli-b",action="pass"} 0' in lines


def test_the_database_holds_hashes_and_counts_never_a_key_or_a_name(pair: Pair) -> None:
    """Every value of every row, as PostgreSQL gives it back, in text and in raw bytes:
    no link secret, no sender's secret, no code, no subject, no file name."""
    from gateway.vault import Manifest, SealFile

    a, _ = pair
    sealed = a.seal(
        Manifest(sender="Dr Martin <dr.martin@cabinet-martin.fr>", subject="SubjectZK9",
                 date="Mon, 02 Nov 2026 09:15:00 +0100", text="BodyZK9", html=None),
        [SealFile("NameZK9.pdf", "application/pdf", "application/pdf", b"%PDF BytesZK9")],
        sender="dr.martin@cabinet-martin.fr", recipient="patient@example.org",
        expires_at=2e9, download_limit=2, access_code="739164", manage=True)
    assert sealed.manage_secret is not None
    with a.index._connect() as db:
        rows = [str(row) for table in ("links", "objects", "pli_schema")
                for row in db.execute(f"SELECT * FROM {table}").fetchall()]
    dump = "\n".join(rows)
    assert sealed.id in dump and "scrypt$" in dump
    for secret in (sealed.secret, sealed.manage_secret, "739164", "SubjectZK9", "BodyZK9",
                   "NameZK9", "BytesZK9"):
        assert secret not in dump


def test_pli_links_purge_waits_its_turn_behind_an_instance_purging(postgres: Postgres,
                                                                   schema: str,
                                                                   tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    gw.config.write_text(gw.config.read_text() + postgres.toml(schema))
    index = PostgresIndex(postgres.conninfo, schema=schema)
    try:
        index.create_schema()
        held = index.try_lock("purge")  # an instance's hourly run, under way
        assert held is not None
        refused = _pli("links", "purge", "-c", str(gw.config))
        assert refused.returncode != 0
        assert "another instance is purging the shared link index" in refused.stderr
        held.release()
    finally:
        index.close()
    done = _pli("links", "purge", "-c", str(gw.config))
    assert done.returncode == 0, done.stderr
    assert "purged 0 link(s)" in done.stdout


def test_postgresql_away_is_the_vault_unavailable_and_the_portal_says_503(
        pair: Pair, tmp_path: Path) -> None:
    """The index's connection lost is the vault unavailable (as the object store away);
    the portal says 503 with Retry-After, the link being fine."""
    from gateway.vault import StoreUnavailable
    from gateway.vault.pgindex import IndexUnreachable
    from tests.portal.helpers import make_settings, run, serve

    a, _ = pair
    link = seal(a)
    away = PostgresIndex("host=127.0.0.1 port=1 dbname=pli user=pli", connect_timeout=1)
    a.index = away
    try:
        with pytest.raises(IndexUnreachable, match="the link index .* cannot be used") as got:
            a.get(link.id)
        assert isinstance(got.value, StoreUnavailable)

        async def scenario() -> tuple[int, str | None]:
            async with serve(a, make_settings(tmp_path)) as client:
                response = await client.get(f"/api/l/{link.id}")
                return response.status, response.headers.get("Retry-After")

        assert run(scenario) == (503, "30")
    finally:
        away.close()


def test_a_message_to_protect_gets_451_while_postgresql_is_down_then_goes(
        tmp_path: Path) -> None:
    """A PostgreSQL of this test's own, stopped under a running `pli run`: a message to
    protect is refused with 451 and its sentence, nothing queued; once PostgreSQL is
    back, the same message goes through."""
    import smtplib

    from tests.engines import POSTGRES_SCRIPT, running_postgres
    from tests.scale.cluster import PROTECT_ALL, protected_message, submit
    from tests.spool.helpers import spool_of
    from tests.support import PliProcess

    with running_postgres() as own:
        gw = make_gateway(tmp_path / "pli", policy=PROTECT_ALL)
        gw.config.write_text(gw.config.read_text() + own.toml().replace(
            'schema = "public"', 'schema = "public"\nconnect_timeout = 2'))
        pli = PliProcess(gw, tmp_path / "pli.log").start()
        try:
            subprocess.run([str(POSTGRES_SCRIPT), "stop", str(own.folder)], check=True,
                           capture_output=True, timeout=60)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                submit(gw.submission_port, gw, protected_message("down@example.org"))
            assert refused.value.smtp_code == 451
            assert b"Pli's vault, where protected documents are kept, does not answer" in (
                b" ".join(refused.value.smtp_error.split()))
            assert spool_of(gw).ids() == []
            subprocess.run([str(POSTGRES_SCRIPT), "start", str(own.folder), str(own.port)],
                           check=True, capture_output=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PLI_PG_FAST": "1"})
            submit(gw.submission_port, gw, protected_message("down@example.org"))
        finally:
            pli.kill(15)


def test_the_hourly_purge_is_skipped_by_an_instance_while_another_holds_it(
        postgres: Postgres, schema: str, tmp_path: Path) -> None:
    import asyncio

    from structlog.testing import capture_logs

    from gateway.app import App

    gw = make_gateway(tmp_path / "pli")
    gw.config.write_text(gw.config.read_text() + postgres.toml(schema))
    app = App(gw.settings())
    other = PostgresIndex(postgres.conninfo, schema=schema)
    try:
        expired = seal(app.vault, expires_in=-60)
        held = other.try_lock("purge")
        assert held is not None
        with capture_logs() as skipped:
            asyncio.run(app._purge_vault())
        assert [e["event"] for e in skipped] == ["vault.purge_skipped"]
        assert app.vault.get(expired.id) is not None
        held.release()
        with capture_logs() as purged:
            asyncio.run(app._purge_vault())
        assert [(e["event"], e.get("links")) for e in purged] == [("vault.purged", 1)]
        assert app.vault.get(expired.id) is None
        assert other.try_lock("purge") is not None  # given back after the run
    finally:
        other.close()
        app.vault.close()


def test_the_databases_password_is_read_from_its_file_never_from_pli_toml(
        tmp_path: Path) -> None:
    from gateway.app import build_index

    gw = make_gateway(tmp_path / "pli")
    base = gw.config.read_text() + ('\n[vault]\nindex = "postgresql"\n[vault.postgresql]\n'
                                    'host = "127.0.0.1"\ndbname = "pli"\nuser = "pli"\n'
                                    'password_file = "pg-password"\n')
    gw.config.write_text(base)
    with pytest.raises(ConfigError, match=r"\[vault.postgresql\]: cannot read the password"):
        build_index(gw.settings())
    (gw.folder / "pg-password").write_text("s3cret word\n")
    assert gw.settings().vault.postgresql is not None
    assert gw.settings().vault.postgresql.password() == "s3cret word"
    index = build_index(gw.settings())
    try:
        assert isinstance(index, PostgresIndex) and "s3cret" not in index.conninfo
        assert "s3cret" not in index.describe()
    finally:
        assert index is not None
        index.close()
