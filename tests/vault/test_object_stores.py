"""The vault's guarantees with each object store: files on disk and a real Swift.

Each test runs twice, on a vault whose objects are files and on one whose objects are in a
Swift container of the test's own (the session's Swift All In One). Whatever the store:
a sealed link reads back byte for byte, whole and by ranges; a seal that fails leaves
nothing that could be served; removing and purging delete the objects; only ciphertext
reaches the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.vault import LinkUnavailable, SealFile, StoreUnavailable, Vault
from gateway.vault.format import MANIFEST_OBJECT_ID, RECORD_SIZE
from gateway.vault.objects import ObjectStore
from gateway.vault.swift import SwiftStore
from gateway.vault.swift_client import SwiftAccount
from tests.swiftaio import SwiftAio
from tests.vault.helpers import seal


@pytest.fixture(params=["files", "swift"])
def vault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Vault]:
    if request.param == "files":
        opened = Vault(tmp_path / "vault")
    else:
        swift: SwiftAio = request.getfixturevalue("swift")
        opened = Vault(tmp_path / "vault", store=swift.new_store())
    yield opened
    opened.close()


@pytest.fixture
def swift_store(swift: SwiftAio) -> Iterator[SwiftStore]:
    store = swift.new_store()
    yield store
    store.close()


def stored(store: ObjectStore, link_id: str) -> dict[str, bytes]:
    """Every object the store holds for the link, as the store gives it back."""
    found: dict[str, bytes] = {}
    if isinstance(store, SwiftStore):
        names = [e["name"].split("/", 1)[1]
                 for e in store._listing(prefix=link_id + "/")]
    else:
        folder = store.link_dir(link_id)  # type: ignore[attr-defined]
        names = sorted(os.listdir(folder)) if folder.exists() else []
    for name in names:
        with store.open(link_id, name) as reader:
            found[name] = b"".join(reader.iter_range())
    return found


class Boom(Exception):
    pass


def failing_after(chunks: int) -> Iterator[bytes]:
    for _ in range(chunks):
        yield os.urandom(RECORD_SIZE)
    raise Boom()


def test_both_stores_answer_the_whole_interface(vault: Vault) -> None:
    assert isinstance(vault.store, ObjectStore)


def test_a_sealed_document_reads_back_whole_and_by_ranges(vault: Vault) -> None:
    document = os.urandom(3 * RECORD_SIZE + 123)
    link = seal(vault, [SealFile("scan.pdf", "application/pdf", "application/pdf", document)])
    entry = vault.read_manifest(link.id, link.secret).files[0]
    assert b"".join(vault.read_file(link.id, link.secret, entry.object_id)) == document
    whole = stored(vault.store, link.id)[entry.object_id]
    with vault.open_object(link.id, entry.object_id) as reader:
        assert reader.size == len(whole)
        assert b"".join(reader.iter_range()) == whole
        assert b"".join(reader.iter_range(100, 70_000, chunk_size=4096)) == whole[100:70_000]
        assert b"".join(reader.iter_range(len(whole) - 1)) == whole[-1:]
        assert b"".join(reader.iter_range(5, 5)) == b""
        assert b"".join(reader.iter_range(0, 10**9)) == whole
        with pytest.raises(ValueError):
            list(reader.iter_range(10, 5))
        # a range broken off half way, then another on the same reader
        pieces = reader.iter_range(0, len(whole), chunk_size=1000)
        assert next(pieces) == whole[:1000]
        pieces.close()
        assert b"".join(reader.iter_range(RECORD_SIZE, 2 * RECORD_SIZE)) == (
            whole[RECORD_SIZE:2 * RECORD_SIZE])


def test_only_ciphertext_reaches_the_store(vault: Vault) -> None:
    secret_text = b"CONTENT-sentinel-5e1d glycemie"
    link = seal(vault, [SealFile("NAME-sentinel-77aa.pdf", "application/pdf",
                                 "application/pdf", secret_text * 50)])
    objects = stored(vault.store, link.id)
    assert set(objects) == {MANIFEST_OBJECT_ID, *(o.id for o in vault.get(link.id).objects)}
    for data in objects.values():
        for needle in (b"CONTENT-sentinel-5e1d", b"NAME-sentinel-77aa", b"Compte rendu",
                       b"Bonjour", b"glycemie"):
            assert needle not in data


def test_a_seal_that_fails_mid_document_leaves_nothing(vault: Vault) -> None:
    before = vault.store.link_ids()
    with pytest.raises(Boom):
        seal(vault, [SealFile("ok.pdf", "t", "t", b"fine"),
                     SealFile("big.pdf", "t", "t", failing_after(3))])
    assert vault.links() == []
    assert vault.store.link_ids() == before
    assert vault.purge().objects == 0


def test_an_aborted_upload_is_never_readable(vault: Vault) -> None:
    link_id = "CCCCCCCCCCCCCCCCCCCCCA"
    vault.store.new_link(link_id)
    writer = vault.store.writer(link_id, "manifest")
    writer.write(os.urandom(RECORD_SIZE))
    writer.abort()
    with pytest.raises(FileNotFoundError):
        vault.store.open(link_id, "manifest")
    committed = vault.store.writer(link_id, "manifest")
    committed.write(b"a" * 10)
    committed.write(b"b" * 5)
    assert committed.commit() == 15
    with vault.store.open(link_id, "manifest") as reader:
        assert b"".join(reader.iter_range()) == b"a" * 10 + b"b" * 5
    with pytest.raises(LinkUnavailable):  # objects without an index row are never served
        vault.open_object(link_id, "manifest")
    with pytest.raises(FileExistsError):  # a link id is never reused
        vault.store.new_link(link_id)
    assert vault.store.remove_link(link_id).objects == 1


def test_removing_a_link_deletes_its_objects(vault: Vault) -> None:
    link = seal(vault, [SealFile("a", "t", "t", b"x" * 1000), SealFile("b", "t", "t", b"y")])
    keep = seal(vault)
    info = vault.get(link.id)
    assert info is not None
    assert vault.discard(link.id) is True
    assert stored(vault.store, link.id) == {}
    assert link.id not in vault.store.link_ids() and keep.id in vault.store.link_ids()
    removed = vault.store.remove_link(link.id)  # already gone: no error, nothing counted
    assert (removed.objects, removed.bytes) == (0, 0)
    assert vault.read_manifest(keep.id, keep.secret).subject == "Compte rendu"


def test_the_purge_deletes_expired_links_and_what_crashed_seals_left(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    expiring = seal(vault, expires_in=60)
    live = seal(vault)
    sizes = {i.id: sum(o.size for o in i.objects) for i in vault.links()}
    orphan = "DDDDDDDDDDDDDDDDDDDDDA"  # a seal that crashed before its index row
    vault.store.new_link(orphan)
    vault.store.write(orphan, "manifest", [b"z" * 100])
    assert 0 <= vault.store.age(orphan) < 60
    assert vault.store.age(orphan, now=time.time() + 7200) > 7000

    result = vault.purge(now=time.time() + 120)
    assert (result.links, result.bytes) == (1, sizes[expiring.id])
    assert stored(vault.store, expiring.id) == {}
    assert orphan in vault.store.link_ids()  # too young to be judged a leftover

    monkeypatch.setattr("gateway.vault.ORPHAN_GRACE", 0.0)
    result = vault.purge()
    assert (result.links, result.objects, result.bytes) == (0, 1, 100)
    assert vault.store.link_ids() == [live.id]
    assert vault.read_manifest(live.id, live.secret).subject == "Compte rendu"


def test_swift_down_fails_the_seal_and_keeps_no_link(
    tmp_path: Path, swift: SwiftAio, swift_store: SwiftStore
) -> None:
    store = swift_store
    vault = Vault(tmp_path / "vault", store=store)
    seal(vault)  # logged in and working
    nowhere = SwiftAccount("http://127.0.0.1:9/auth/v1.0", swift.user, lambda: swift.key,
                           timeout=2)
    down = Vault(tmp_path / "vault", store=SwiftStore(nowhere, store.container))
    with pytest.raises(StoreUnavailable) as caught:
        seal(down)
    assert "cannot be reached" in str(caught.value)
    assert len(vault.links()) == 1


def test_swifts_certificate_is_checked(swift: SwiftAio) -> None:
    """The session's Swift speaks HTTPS under a CA of its own: without it, no login."""
    assert swift.auth_url.startswith("https://")
    store = SwiftStore(SwiftAccount(swift.auth_url, swift.user, lambda: swift.key, timeout=5),
                       "pli-never")
    with pytest.raises(StoreUnavailable) as caught:
        store.connect()
    assert "certificate verify failed" in str(caught.value)


def test_a_wrong_key_is_said_plainly(swift: SwiftAio) -> None:
    store = SwiftStore(SwiftAccount(swift.auth_url, swift.user, lambda: "wrong", timeout=5,
                                    ca_file=str(swift.ca_file)), "pli-never")
    with pytest.raises(StoreUnavailable) as caught:
        store.connect()
    assert "refused the user 'test:tester'" in str(caught.value)


def test_a_token_swift_no_longer_takes_is_renewed(swift_store: SwiftStore) -> None:
    store = swift_store
    store.write("EEEEEEEEEEEEEEEEEEEEEA", "manifest", [b"kept"])
    store.account._token = "AUTH_tk" + "0" * 32  # as after Swift forgot it (expiry, restart)
    with store.open("EEEEEEEEEEEEEEEEEEEEEA", "manifest") as reader:
        assert b"".join(reader.iter_range()) == b"kept"
    assert store.account._token != "AUTH_tk" + "0" * 32
