"""The link index: access codes, downloads per document, expiry, revocation and purge.

Every test here runs on both indexes, SQLite (the default) and PostgreSQL (shared by
several instances), except those about SQLite's own file (``sqlite_vault``)."""

from __future__ import annotations

import hmac
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.vault import IndexVersionError, LinkUnavailable, SealFile, UnknownLink, Vault
from gateway.vault.index import SCHEMA_VERSION, normalise_code
from tests.vault.helpers import DAY, RECIPIENT, SENDER, manifest, seal


@pytest.fixture(params=["sqlite", "postgresql"])
def vault(request: pytest.FixtureRequest, tmp_path: Path) -> Vault:
    if request.param == "sqlite":
        return Vault(tmp_path / "data" / "vault")
    return Vault(tmp_path / "data" / "vault", index=request.getfixturevalue("pg_index"))


@pytest.fixture
def sqlite_vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path / "data" / "vault")


def test_the_index_is_sqlite_in_wal_mode_with_full_sync(sqlite_vault: Vault) -> None:
    vault = sqlite_vault
    with vault.index._connect() as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_a_link_is_listed_with_what_enforces_its_limits(vault: Vault) -> None:
    before = time.time()
    link = seal(vault, code="4821", download_limit=3)
    [info] = vault.links()
    assert info.id == link.id and before <= info.created <= time.time()
    assert info.expires == link.expires_at
    assert (info.download_limit, info.downloads, info.failed_attempts) == (3, 0, 0)
    assert info.has_code and not info.locked and info.revoked is None
    assert (info.sender, info.recipients) == (SENDER, (RECIPIENT,))
    assert [o.id for o in info.objects][0] == "manifest" and len(info.objects) == 2
    assert vault.status(link.id) == "ok" and vault.is_usable(link.id)


def test_the_right_code_opens_and_spacing_or_case_do_not_matter(vault: Vault) -> None:
    link = seal(vault, code="ab-12 c")
    for attempt in ("ab-12 c", "AB12C", " ab 12 c "):
        result = vault.check_code(link.id, attempt)
        assert result.ok and not result.locked and result.remaining == 5
    assert normalise_code("48 21") == "4821"


def test_a_link_without_code_needs_none(vault: Vault) -> None:
    link = seal(vault, code=None)
    assert vault.check_code(link.id, "").ok
    info = vault.get(link.id)
    assert info is not None and not info.has_code


def test_wrong_codes_count_down_and_the_fifth_locks_the_link(vault: Vault) -> None:
    link = seal(vault, code="4821")
    for remaining in (4, 3, 2, 1):
        result = vault.check_code(link.id, "0000")
        assert (result.ok, result.remaining, result.locked) == (False, remaining, False)
    assert vault.check_code(link.id, "4821").remaining == 1  # a right code uses no try
    last = vault.check_code(link.id, "1111")
    assert (last.ok, last.remaining, last.locked) == (False, 0, True)
    after = vault.check_code(link.id, "4821")
    assert (after.ok, after.locked) == (False, True)  # even the right code, once locked
    assert vault.status(link.id) == "locked" and not vault.is_usable(link.id)
    with pytest.raises(LinkUnavailable):
        vault.open_object(link.id, "manifest")


def test_codes_are_compared_in_constant_time_on_salted_scrypt_hashes(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    link, twin = seal(vault, code="4821"), seal(vault, code="4821")
    assert vault.check_code(link.id, "4821").ok
    assert not vault.check_code(link.id, "4822").ok
    assert len(compared) == 2 and all(len(a) == len(b) == 32 for a, b in compared)
    with vault.index._connect() as db:
        hashes = [h for (h,) in db.execute("SELECT code_hash FROM links ORDER BY id")]
    assert all(h.startswith("scrypt$") and "4821" not in h for h in hashes)
    assert len(set(hashes)) == 2, "each link's hash has its own salt"
    assert twin.id != link.id


def test_parallel_guesses_cannot_go_past_the_limit(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = seal(vault, code="4821")
    evaluated: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        evaluated.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    threads = [threading.Thread(target=vault.check_code, args=(link.id, f"{n:04d}"))
               for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(evaluated) == 5
    info = vault.get(link.id)
    assert info is not None and info.locked and info.failed_attempts == 5


def test_checking_a_code_for_an_unknown_link_is_an_error(vault: Vault) -> None:
    with pytest.raises(UnknownLink):
        vault.check_code("AAAAAAAAAAAAAAAAAAAAAA", "1234")
    with pytest.raises(UnknownLink):
        vault.check_code("../etc", "1234")


def documents(count: int) -> list[SealFile]:
    return [SealFile(f"doc-{n}.pdf", "application/pdf", "application/pdf", b"%%PDF %d" % n)
            for n in range(count)]


def test_each_document_may_be_downloaded_up_to_the_limit_of_its_own(vault: Vault) -> None:
    """Seven documents and a limit of 2: every one can be downloaded twice, 14 in all."""
    link = seal(vault, documents(7), download_limit=2)
    info = vault.get(link.id)
    assert info is not None
    files = info.files
    assert len(files) == 7 and all(f.id != "manifest" for f in files)
    assert [vault.grant_download(link.id, f.id) for f in files] == [1] * 7
    assert vault.is_usable(link.id)  # 7 downloads, past the limit of 2, and nothing used up
    assert [vault.grant_download(link.id, f.id) for f in files[:-1]] == [0] * 6
    assert vault.grant_download(link.id, files[0].id) is None  # that one is used up
    assert vault.is_usable(link.id)  # the last document still has one download
    info = vault.get(link.id)
    assert info is not None
    assert [info.downloads_left(f) for f in info.files] == [0] * 6 + [1]
    assert info.downloads == 13
    assert vault.grant_download(link.id, files[-1].id) == 0
    assert vault.status(link.id) == "exhausted" and not vault.is_usable(link.id)
    with pytest.raises(LinkUnavailable) as caught:
        vault.open_object(link.id, "manifest")
    assert caught.value.status == "exhausted"
    with pytest.raises(LinkUnavailable):
        vault.open_object(link.id, files[0].id)
    # A download granted before the link was used up is still served.
    vault.open_object(link.id, files[-1].id, granted=True).close()


def test_only_a_links_own_documents_are_granted_and_never_the_manifest(vault: Vault) -> None:
    link, other = seal(vault), seal(vault)
    other_info = vault.get(other.id)
    assert other_info is not None
    for object_id in ("manifest", other_info.files[0].id, "AAAAAAAAAAAAAAAAAAAAAA", ""):
        assert vault.grant_download(link.id, object_id) is None, object_id
    assert vault.grant_download("../index", "manifest") is None
    info = vault.get(link.id)
    assert info is not None and info.downloads == 0
    assert [o.downloads for o in info.objects] == [0, 0]


def test_a_link_without_documents_is_never_used_up(vault: Vault) -> None:
    link = vault.seal(manifest(), [], sender=SENDER, recipient=RECIPIENT,
                      expires_at=time.time() + DAY, download_limit=1, access_code=None)
    info = vault.get(link.id)
    assert info is not None and info.files == ()
    assert vault.status(link.id) == "ok"
    vault.open_object(link.id, "manifest").close()


def test_parallel_downloads_get_exactly_the_downloads_left(vault: Vault) -> None:
    """Twenty at once for a document with 3 downloads: 3 are granted, 17 refused."""
    link = seal(vault, download_limit=3)
    info = vault.get(link.id)
    assert info is not None
    document = info.files[0].id
    answers: list[int | None] = []
    start = threading.Barrier(20)

    def grant() -> None:
        start.wait()
        answers.append(vault.grant_download(link.id, document))

    threads = [threading.Thread(target=grant) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a for a in answers if a is not None) == [0, 1, 2]
    assert answers.count(None) == 17
    info = vault.get(link.id)
    assert info is not None and info.files[0].downloads == 3 and info.downloads == 3


def test_an_expired_revoked_or_locked_link_grants_nothing(vault: Vault) -> None:
    expiring, revoked, locked = seal(vault, expires_in=DAY), seal(vault), seal(vault, code="1")
    vault.revoke(revoked.id)
    for _ in range(5):
        vault.check_code(locked.id, "0")
    for link, now in ((expiring, expiring.expires_at), (revoked, None), (locked, None)):
        info = vault.get(link.id)
        assert info is not None
        assert vault.grant_download(link.id, info.files[0].id, now) is None
        with pytest.raises(LinkUnavailable):
            vault.open_object(link.id, info.files[0].id, now, granted=True)
        after = vault.get(link.id)
        assert after is not None and after.files[0].downloads == 0


def test_a_link_expires_at_its_time(vault: Vault) -> None:
    link = seal(vault, expires_in=DAY)
    assert vault.is_usable(link.id, now=link.expires_at - 1)
    assert vault.status(link.id, now=link.expires_at) == "expired"
    with pytest.raises(LinkUnavailable):
        vault.open_object(link.id, "manifest", now=link.expires_at + 1)
    vault.open_object(link.id, "manifest", now=link.expires_at - 1).close()


def test_a_revoked_link_serves_nothing(vault: Vault) -> None:
    link = seal(vault)
    assert vault.revoke(link.id) is True
    assert vault.revoke(link.id) is True  # revoking twice keeps the first time
    assert vault.status(link.id) == "revoked"
    with pytest.raises(LinkUnavailable):
        vault.open_object(link.id, "manifest")
    assert vault.revoke("AAAAAAAAAAAAAAAAAAAAAA") is False
    assert vault.revoke("not an id") is False
    assert vault.status("AAAAAAAAAAAAAAAAAAAAAA") == "unknown"


def test_purge_deletes_expired_and_revoked_links_for_good(vault: Vault) -> None:
    expiring = seal(vault, expires_in=DAY)
    revoked = seal(vault)
    live = seal(vault, expires_in=30 * DAY)
    exhausted = seal(vault, download_limit=1)
    exhausted_info = vault.get(exhausted.id)
    assert exhausted_info is not None
    vault.grant_download(exhausted.id, exhausted_info.files[0].id)
    assert vault.status(exhausted.id) == "exhausted"
    vault.revoke(revoked.id)
    sizes = {i.id: sum(o.size for o in i.objects) for i in vault.links()}

    result = vault.purge(now=time.time() + 2 * DAY)
    assert (result.links, result.objects) == (2, 4)
    assert result.bytes == sizes[expiring.id] + sizes[revoked.id]
    assert {i.id for i in vault.links()} == {live.id, exhausted.id}
    for gone in (expiring, revoked):
        assert vault.get(gone.id) is None
        assert not (vault.root / "objects" / gone.id).exists()
    with vault.index._connect() as db:
        assert db.execute("SELECT count(*) FROM objects").fetchone() == (4,)
    assert vault.purge(now=time.time() + 2 * DAY).links == 0


def test_an_interrupted_purge_is_finished_by_the_next(vault: Vault) -> None:
    link = seal(vault, expires_in=1)
    vault.store.remove_link(link.id)  # files gone, then the process died
    assert vault.purge(now=time.time() + 10).links == 1
    assert vault.get(link.id) is None


# -- an index written before downloads were counted per document -----------------------

SCHEMA_0 = """
CREATE TABLE IF NOT EXISTS links (
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
);
CREATE TABLE IF NOT EXISTS objects (
    link_id   TEXT NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    object_id TEXT NOT NULL,
    size      INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (link_id, object_id)
);
CREATE INDEX IF NOT EXISTS links_expires ON links (expires);
"""


def as_version_0(vault: Vault, downloads: dict[str, int]) -> None:
    """Rewrite the vault's index as the first schema (one download count per link) held
    it, with these counts, as an existing installation's index.sqlite3 is."""
    path = vault.root / "index.sqlite3"
    with vault.index._connect() as db:
        links = db.execute("SELECT id, created, expires, download_limit, code_hash,"
                           " failed_attempts, locked, revoked, sender, recipients"
                           " FROM links").fetchall()
        objects = db.execute(
            "SELECT link_id, object_id, size, position FROM objects").fetchall()
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript(SCHEMA_0)
        db.executemany(
            "INSERT INTO links (id, created, expires, download_limit, code_hash,"
            " failed_attempts, locked, revoked, sender, recipients, downloads)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row, downloads.get(row[0], 0)) for row in links])
        db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?)", objects)
        db.commit()
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
    finally:
        db.close()


def test_an_index_from_before_per_document_counts_keeps_working(sqlite_vault: Vault) -> None:
    """Each document starts where its link was: nothing allows more than it did, a used
    up link stays used up, and the rest goes on per document."""
    vault = sqlite_vault
    begun = seal(vault, documents(3), download_limit=5)
    used_up = seal(vault, documents(2), download_limit=2)
    fresh = seal(vault, documents(1), download_limit=5, code="4821")
    vault.check_code(fresh.id, "0000")
    as_version_0(vault, {begun.id: 3, used_up.id: 2})

    reopened = Vault(vault.root)
    with reopened.index._connect() as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    info = reopened.get(begun.id)
    assert info is not None and info.downloads == 3
    assert [info.downloads_left(f) for f in info.files] == [2, 2, 2]
    assert reopened.status(used_up.id) == "exhausted"
    fresh_info = reopened.get(fresh.id)
    assert fresh_info is not None and fresh_info.failed_attempts == 1
    assert [f.downloads for f in fresh_info.files] == [0] and fresh_info.has_code
    assert info.objects[0].id == "manifest" and info.objects[0].downloads == 0

    assert reopened.grant_download(begun.id, info.files[0].id) == 1
    assert reopened.grant_download(used_up.id, "AAAAAAAAAAAAAAAAAAAAAA") is None
    later = seal(reopened, documents(2), download_limit=1)
    assert reopened.status(later.id) == "ok"
    # Opening it again changes nothing.
    again = Vault(vault.root).get(begun.id)
    assert again is not None
    assert [again.downloads_left(f) for f in again.files] == [1, 2, 2]
    with pytest.raises(LinkUnavailable):
        reopened.open_object(used_up.id, "manifest")


def test_an_index_from_a_newer_pli_is_refused_rather_than_misread(sqlite_vault: Vault) -> None:
    vault = sqlite_vault
    with vault.index._connect() as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(IndexVersionError, match="newer"):
        Vault(vault.root)


def test_deleting_a_link_says_whether_there_was_one(vault: Vault) -> None:
    link = seal(vault)
    assert vault.index.delete(link.id) is True
    assert vault.index.delete(link.id) is False
    assert vault.get(link.id) is None


def test_a_code_check_says_the_tries_left_and_a_locked_link_has_none(vault: Vault) -> None:
    link = seal(vault, code="4821")
    vault.check_code(link.id, "0000")
    right = vault.check_code(link.id, "4821")
    assert (right.ok, right.remaining, right.locked) == (True, 4, False)
    for _ in range(4):
        vault.check_code(link.id, "0000")
    locked = vault.check_code(link.id, "4821")
    assert (locked.ok, locked.remaining, locked.locked) == (False, 0, True)
