"""The link index: access codes, downloads, expiry, revocation and purge."""

from __future__ import annotations

import hmac
import threading
import time

import pytest

from gateway.vault import LinkUnavailable, UnknownLink, Vault
from gateway.vault.index import normalise_code
from tests.vault.helpers import DAY, RECIPIENT, SENDER, seal


def test_the_index_is_sqlite_in_wal_mode_with_full_sync(vault: Vault) -> None:
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


def test_downloads_are_counted_up_to_the_limit(vault: Vault) -> None:
    link = seal(vault, download_limit=2)
    assert vault.count_download(link.id) is True
    assert vault.is_usable(link.id)
    assert vault.count_download(link.id) is True
    assert vault.status(link.id) == "exhausted" and not vault.is_usable(link.id)
    assert vault.count_download(link.id) is False
    info = vault.get(link.id)
    assert info is not None and info.downloads == 2
    with pytest.raises(LinkUnavailable) as caught:
        vault.open_object(link.id, "manifest")
    assert caught.value.status == "exhausted"


def test_a_link_expires_at_its_time(vault: Vault) -> None:
    link = seal(vault, expires_in=DAY)
    assert vault.is_usable(link.id, now=link.expires_at - 1)
    assert vault.status(link.id, now=link.expires_at) == "expired"
    assert not vault.count_download(link.id, now=link.expires_at + 1)
    with pytest.raises(LinkUnavailable):
        vault.open_object(link.id, "manifest", now=link.expires_at + 1)
    vault.open_object(link.id, "manifest", now=link.expires_at - 1).close()


def test_a_revoked_link_serves_nothing(vault: Vault) -> None:
    link = seal(vault)
    assert vault.revoke(link.id) is True
    assert vault.revoke(link.id) is True  # revoking twice keeps the first time
    assert vault.status(link.id) == "revoked" and not vault.count_download(link.id)
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
    vault.count_download(exhausted.id)
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
