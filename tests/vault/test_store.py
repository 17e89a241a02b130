"""Sealing into the vault: round trips, durability, crash safety, no clear text, memory."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.vault import LinkUnavailable, Manifest, SealFile, Vault, VaultFormatError
from gateway.vault.format import RECORD_SIZE, ciphertext_size
from tests.vault.helpers import RECIPIENT, SENDER, all_files, manifest, seal


def test_a_sealed_message_opens_with_its_secret(vault: Vault) -> None:
    pdf = os.urandom(3 * RECORD_SIZE + 7)
    link = seal(vault, [
        SealFile("ordonnance.pdf", "application/pdf", "application/pdf", pdf),
        SealFile("vide.txt", "text/plain", "application/x-empty", b""),
    ], message=manifest("Votre ordonnance", "Voici l'ordonnance"))
    opened = vault.read_manifest(link.id, link.secret)
    assert opened.subject == "Votre ordonnance" and opened.text == "Voici l'ordonnance"
    assert [(f.name, f.true_type, f.size) for f in opened.files] == [
        ("ordonnance.pdf", "application/pdf", len(pdf)), ("vide.txt", "application/x-empty", 0)]
    first, second = opened.files
    assert b"".join(vault.read_file(link.id, link.secret, first.object_id)) == pdf
    assert b"".join(vault.read_file(link.id, link.secret, second.object_id)) == b""


def test_files_can_come_as_open_files_or_chunks(vault: Vault, tmp_path: Path) -> None:
    data = os.urandom(RECORD_SIZE + 99)
    on_disk = tmp_path / "scan.pdf"
    on_disk.write_bytes(data)
    chunks = (data[i : i + 5000] for i in range(0, len(data), 5000))
    with on_disk.open("rb") as handle:
        link = seal(vault, [SealFile("a", "application/pdf", "application/pdf", handle),
                            SealFile("b", "application/pdf", "application/pdf", chunks)])
    for entry in vault.read_manifest(link.id, link.secret).files:
        assert entry.size == len(data)
        assert b"".join(vault.read_file(link.id, link.secret, entry.object_id)) == data


def test_the_link_carries_its_secret_only_in_the_fragment(vault: Vault) -> None:
    link = seal(vault)
    assert len(link.id) == 22 and len(link.secret) == 43
    assert link.fragment_url("https://portail.example/") == (
        f"https://portail.example/l/{link.id}#{link.secret}")
    assert link.secret not in repr(link)
    assert link.id not in link.secret and link.secret not in link.id


def test_a_wrong_secret_does_not_open(vault: Vault) -> None:
    link = seal(vault)
    other = seal(vault)
    with pytest.raises(VaultFormatError):
        vault.read_manifest(link.id, other.secret)


def test_objects_are_private_files_under_the_link_folder(vault: Vault) -> None:
    link = seal(vault)
    info = vault.get(link.id)
    assert info is not None
    folder = vault.root / "objects" / link.id
    assert sorted(p.name for p in folder.iterdir()) == sorted(o.id for o in info.objects)
    assert info.objects[0].id == "manifest"
    for obj in info.objects:
        path = folder / obj.id
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_size == obj.size
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert info.objects[1].size == ciphertext_size(len(b"hello"))


def test_every_object_is_fsynced_and_renamed_before_the_link_exists(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_rename, real_create = os.fsync, os.rename, vault.index.create

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync {kind}")
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        events.append("rename")
        real_rename(src, dst)

    def create(*args: object, **kwargs: object) -> None:
        events.append("index")
        real_create(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(vault.index, "create", create)
    seal(vault, [SealFile("a", "t", "t", b"1"), SealFile("b", "t", "t", b"2")])
    assert events == ["fsync dir",  # the new link folder, in objects/
                      "fsync file", "rename", "fsync file", "rename",  # two files
                      "fsync file", "rename",  # the manifest
                      "fsync dir",  # the link folder, holding the renames
                      "index"]


class Boom(Exception):
    pass


def failing_after(records: int) -> Iterator[bytes]:
    for _ in range(records):
        yield b"\x00" * RECORD_SIZE
    raise Boom("the message could not be read any further")


def assert_nothing_left(vault: Vault) -> None:
    assert vault.links() == []
    assert list((vault.root / "objects").iterdir()) == []
    assert list((vault.root / "tmp").iterdir()) == []


def test_a_seal_that_fails_mid_file_leaves_nothing(vault: Vault) -> None:
    with pytest.raises(Boom):
        seal(vault, [SealFile("ok.pdf", "t", "t", b"fine"),
                     SealFile("big.pdf", "t", "t", failing_after(3))])
    assert_nothing_left(vault)


def test_a_seal_that_fails_at_the_index_leaves_no_object(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    def create(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(vault.index, "create", create)
    with pytest.raises(sqlite3.OperationalError):
        seal(vault, [SealFile("a.pdf", "t", "t", b"data")])
    assert_nothing_left(vault)


def test_a_seal_with_bad_arguments_writes_nothing(vault: Vault) -> None:
    with pytest.raises(ValueError):
        seal(vault, download_limit=0)
    with pytest.raises(ValueError):
        seal(vault, code="  ")
    with pytest.raises(TypeError):
        seal(vault, [SealFile("a", "t", "t", "not bytes")])  # type: ignore[arg-type]
    assert_nothing_left(vault)


def test_what_a_killed_process_left_behind_goes_at_a_later_purge(vault: Vault) -> None:
    orphan = vault.root / "objects" / "AAAAAAAAAAAAAAAAAAAAAA"
    orphan.mkdir()
    (orphan / "manifest").write_bytes(b"x" * 100)
    stale_tmp = vault.root / "tmp" / "AAAAAAAAAAAAAAAAAAAAAA.manifest.1234"
    stale_tmp.write_bytes(b"y")
    fresh = vault.root / "objects" / "BBBBBBBBBBBBBBBBBBBBBA"  # a seal under way right now
    fresh.mkdir()
    live = seal(vault)

    vault.purge()
    assert orphan.exists() and fresh.exists() and stale_tmp.exists()  # too young to judge

    two_hours_ago = time.time() - 7200
    for path in (orphan, stale_tmp):
        os.utime(path, (two_hours_ago, two_hours_ago))
    result = vault.purge()
    assert not orphan.exists() and not stale_tmp.exists()
    assert fresh.exists() and vault.get(live.id) is not None
    assert result.links == 0 and result.objects == 1 and result.bytes == 100


def test_discard_removes_a_just_sealed_link(vault: Vault) -> None:
    link = seal(vault)
    keep = seal(vault)
    assert vault.discard(link.id) is True
    assert vault.get(link.id) is None
    assert not (vault.root / "objects" / link.id).exists()
    assert vault.discard(link.id) is False
    assert vault.get(keep.id) is not None


def test_ciphertext_is_served_whole_or_by_byte_ranges(vault: Vault) -> None:
    link = seal(vault, [SealFile("a", "t", "t", os.urandom(2 * RECORD_SIZE))])
    object_id = vault.read_manifest(link.id, link.secret).files[0].object_id
    on_disk = (vault.root / "objects" / link.id / object_id).read_bytes()
    with vault.open_object(link.id, object_id) as reader:
        assert reader.size == len(on_disk)
        assert b"".join(reader.iter_range()) == on_disk
        assert b"".join(reader.iter_range(100, 70_000)) == on_disk[100:70_000]
        assert b"".join(reader.iter_range(len(on_disk) - 1)) == on_disk[-1:]
        assert b"".join(reader.iter_range(5, 5)) == b""
        assert b"".join(reader.iter_range(0, 10**9)) == on_disk
        with pytest.raises(ValueError):
            list(reader.iter_range(10, 5))


def test_only_a_links_own_objects_are_served(vault: Vault) -> None:
    link = seal(vault)
    other = seal(vault)
    other_object = vault.read_manifest(other.id, other.secret).files[0].object_id
    for object_id in (other_object, "../../index.sqlite3", "nothing", ""):
        with pytest.raises(LinkUnavailable):
            vault.open_object(link.id, object_id)
    for link_id in ("../objects", "AAAAAAAAAAAAAAAAAAAAAA", "x"):
        with pytest.raises(LinkUnavailable) as caught:
            vault.open_object(link_id, "manifest")
        assert caught.value.status == "unknown"


def test_a_group_of_recipients_is_kept_as_a_list(vault: Vault) -> None:
    link = vault.seal(manifest(), [], sender=SENDER, recipient=["a@x.example", "b@y.example"],
                      expires_at=time.time() + 60, download_limit=1, access_code=None)
    joined = vault.seal(manifest(), [], sender=SENDER, recipient="a@x.example, b@y.example",
                        expires_at=time.time() + 60, download_limit=1, access_code=None)
    single = vault.seal(manifest(), [], sender=SENDER, recipient="c@z.example",
                        expires_at=time.time() + 60, download_limit=1, access_code=None)
    infos = [vault.get(x.id) for x in (link, joined, single)]
    assert [i.recipients for i in infos if i] == [
        ("a@x.example", "b@y.example"), ("a@x.example", "b@y.example"), ("c@z.example",)]
    with pytest.raises(ValueError):
        vault.seal(manifest(), [], sender=SENDER, recipient=" , ", expires_at=time.time() + 60,
                   download_limit=1, access_code=None)
    assert vault.read_manifest(link.id, link.secret).files == ()


def test_nothing_of_the_message_is_on_disk_in_clear(vault: Vault) -> None:
    sentinels = {
        "subject": "SUBJECT-sentinel-7f3a Résultats",
        "text": "BODY-sentinel-91c2 glycémie",
        "html": "HTML-sentinel-55d0",
        "name": "NAME-sentinel-c4e8 Élodie.pdf",
        "sender display": "DISPLAY-sentinel-0b9e",
        "content": "CONTENT-sentinel-a1b2 " * 3,
        "code": "CODE-SENTINEL-D00D",
    }
    message = Manifest(sender=sentinels["sender display"], subject=sentinels["subject"],
                       date="Thu, 02 May 2024 09:15:00 +0200", text=sentinels["text"],
                       html=f"<p>{sentinels['html']}</p>")
    # A reader kept open keeps the write-ahead log on disk, as on a busy server.
    keeper = sqlite3.connect(vault.root / "index.sqlite3")
    keeper.execute("SELECT count(*) FROM links").fetchone()
    try:
        link = vault.seal(message, [SealFile(sentinels["name"], "application/pdf",
                                             "application/pdf",
                                             sentinels["content"].encode())],
                          sender=SENDER, recipient=RECIPIENT, expires_at=time.time() + 60,
                          download_limit=5, access_code=sentinels["code"])
        vault.check_code(link.id, "wrong")
        files = all_files(vault.root)
        assert {p.name for p in files} >= {"index.sqlite3", "index.sqlite3-wal", "manifest"}
        _assert_absent(files, sentinels.values())
    finally:
        keeper.close()
    _assert_absent(all_files(vault.root), sentinels.values())
    assert vault.read_manifest(link.id, link.secret).subject == sentinels["subject"]


def _assert_absent(files: list[Path], sentinels: object) -> None:
    needles: list[bytes] = []
    for text in sentinels:  # type: ignore[attr-defined]
        for part in str(text).split():
            needles += [part.encode("utf-8"), json.dumps(part)[1:-1].encode("ascii"),
                        part.encode("utf-16-le")]
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} in clear in {path.name}"


def test_sealing_a_large_file_streams_it(vault: Vault, tmp_path: Path) -> None:
    big = tmp_path / "scan.tiff"
    block = os.urandom(1 << 20)
    with big.open("wb") as out:
        for _ in range(50):
            out.write(block)
    del block
    with big.open("rb") as handle:
        tracemalloc.start()
        try:
            link = seal(vault, [SealFile("scan.tiff", "image/tiff", "image/tiff", handle)])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 5 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    entry = vault.read_manifest(link.id, link.secret).files[0]
    assert entry.size == 50 << 20
    with big.open("rb") as original:
        for piece in vault.read_file(link.id, link.secret, entry.object_id):
            assert piece == original.read(len(piece))
        assert original.read(1) == b""


def test_a_file_given_in_memory_is_not_copied_whole(vault: Vault) -> None:
    data = bytes(20 << 20)
    tracemalloc.start()
    try:
        seal(vault, [SealFile("a", "t", "t", data), SealFile("b", "t", "t", io.BytesIO(data))])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
