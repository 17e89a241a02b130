"""A full disk met by the link index is said as a full disk (OSError ENOSPC, which the
message path answers with 452 4.3.1), whichever of SQLite's two ways it comes in, and the
half-sealed link is gone."""

from __future__ import annotations

import errno
import smtplib
import sqlite3
from pathlib import Path

import pytest

from gateway.diskfull import is_disk_full, sqlite_errors_as_os_errors
from gateway.spool.store import is_disk_full as spool_is_disk_full
from gateway.vault import Vault
from tests.diskfill import PAGE, leave_free, make_room, small_disk
from tests.spool.helpers import PATIENT, message, submit
from tests.spool.test_disk_full import NAMESPACE, inside, on_small_disk
from tests.support import ADDRESS, HOST, PASSWORD, USER
from tests.vault.helpers import all_files, seal

SHM = 32 * 1024  # the write-ahead log's shared-memory index, made at a connection's start


@pytest.mark.parametrize(("room", "sqlite_says"), [
    (2 * PAGE, "SQLITE_IOERR_SHMSIZE"),       # the two objects fit, the log's index does not
    (2 * PAGE + SHM, "SQLITE_FULL"),          # the index fits, the log itself does not
])
def test_a_seal_whose_index_row_finds_no_room_raises_enospc_and_leaves_nothing(
        tmp_path: Path, room: int, sqlite_says: str) -> None:
    with small_disk(tmp_path / "disk") as disk:
        vault = Vault(disk / "vault")
        leave_free(disk, room)
        with pytest.raises(OSError) as raised:
            seal(vault)  # a manifest and one small file: one page each
        assert raised.value.errno == errno.ENOSPC and is_disk_full(raised.value)
        assert spool_is_disk_full(raised.value)
        cause = raised.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError)
        assert cause.sqlite_errorname == sqlite_says
        assert not list((disk / "vault" / "objects").iterdir())
        assert not list((disk / "vault" / "tmp").iterdir())
        make_room(disk)
        assert vault.links() == []
        link = seal(vault)
        assert [info.id for info in vault.links()] == [link.id]
        assert len(all_files(disk / "vault" / "objects")) == 2


def test_sqlite_full_counts_as_a_full_disk_and_other_sqlite_errors_do_not(
        tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "small.sqlite3")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("PRAGMA max_page_count = 3")  # a database that may not grow: SQLITE_FULL
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    assert str(full.value) == "database or disk is full" and is_disk_full(full.value)
    with pytest.raises(sqlite3.OperationalError) as other:
        db.execute("SELECT * FROM missing")
    assert not is_disk_full(other.value)
    db.close()
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("database or disk is full"))


def test_only_full_disk_sqlite_errors_become_os_errors(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError), sqlite_errors_as_os_errors(tmp_path / "x"):
        sqlite3.connect(":memory:").execute("SELECT * FROM missing")
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("PRAGMA max_page_count = 2")
    with pytest.raises(OSError) as raised, sqlite_errors_as_os_errors(tmp_path / "x.sqlite3"):
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "x.sqlite3")


@pytest.mark.skipif(NAMESPACE is None, reason="no mount namespace can be made here")
@pytest.mark.parametrize("room", [2 * PAGE, 2 * PAGE + SHM])
def test_a_full_disk_met_by_the_link_index_gets_452_over_smtp(tmp_path: Path,
                                                              room: int) -> None:
    """A real `pli run` on its own small disk; the disk fills between RCPT and DATA so
    that the sealed objects fit and the link's index row does not."""
    gw, pli = on_small_disk(tmp_path, protect=True)
    try:
        data = inside(pli, gw.settings().data_dir)
        with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
            client.starttls(context=gw.client_context())
            client.login(USER, PASSWORD)
            assert client.mail(ADDRESS)[0] == 250
            assert client.rcpt(PATIENT)[0] == 250
            leave_free(data, room)
            code, text = client.data(message(body="Résultats"))
        assert (code, text[:6]) == (452, b"4.3.1 "), (code, text)
        assert b"disque du serveur Pli est plein" in text and b"disk is full" in text
        assert '"event": "pipeline.disk_full"' in pli.log()
        assert "session.internal_error" not in pli.log()
        vault = inside(pli, gw.settings().vault_dir)
        assert not list(vault.glob("objects/*")) and not list(vault.glob("tmp/*"))
        spool = inside(pli, gw.settings().spool_dir)
        assert not any((spool / "queue").iterdir()) and not any((spool / "incoming").iterdir())
        make_room(data)
        submit(gw)  # mail flows again, with its link
        assert len(list(vault.glob("objects/*"))) == 1
    finally:
        pli.kill()
