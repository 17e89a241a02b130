"""The reply vector: the Python sealer reproduces it, the server takes it as an upload and
keeps it whole, and whoever holds its secret opens it; malformed uploads leave nothing."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from gateway.vault import LinkOptions, Manifest, SealFile, Vault
from gateway.vault.format import ciphertext_size, plaintext_size
from gateway.vault.upload import ReplyLimits, ReplyUpload, UploadRefused
from tests.vault.helpers import all_files
from tests.vault.reply_vector import FILES, VECTOR_PATH, build_vector, render

LIMITS = ReplyLimits(max_files=2, max_bytes=100_000)


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))
    return data


def objects_of(vector: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [("manifest", base64.b64decode(vector["manifest"]["ciphertext_b64"]))] + [
        (f["object_id"], base64.b64decode(f["ciphertext_b64"])) for f in vector["files"]]


def parent(vault: Vault, **options: int) -> str:
    return vault.seal(Manifest(sender="Dr", subject="s", date=""),
                      [SealFile("a.txt", "text/plain", "text/plain", b"a")],
                      sender="dr@cabinet.example", recipient="patient@example.org",
                      expires_at=time.time() + 86400, download_limit=5, access_code=None,
                      options=LinkOptions(reply_max_files=options.get("files", 2),
                                          reply_max_bytes=options.get("bytes", 100_000))).id


def upload(vault: Vault, parent_id: str, vector: dict[str, Any],
           objects: list[tuple[str, bytes]] | None = None, chunk: int = 1000,
           limits: ReplyLimits = LIMITS) -> ReplyUpload:
    objects = objects_of(vector) if objects is None else objects
    receiving = ReplyUpload(vault, parent_id, vector["link_id"],
                            [object_id for object_id, _ in objects[1:]], limits)
    try:
        for object_id, data in objects:
            receiving.start(object_id)
            for start in range(0, len(data), chunk):
                receiving.write(data[start:start + chunk])
            receiving.end()
    except UploadRefused:
        receiving.abort()
        raise
    return receiving


def test_the_python_sealer_reproduces_the_reply_vector() -> None:
    assert render(build_vector()) == VECTOR_PATH.read_text(encoding="utf-8")


def test_the_server_takes_the_vector_as_an_upload_and_the_secret_opens_it(
        vault: Vault, vector: dict[str, Any]) -> None:
    parent_id = parent(vault)
    reply = upload(vault, parent_id, vector).finish(time.time(), max_replies=20)
    assert reply.id == vector["link_id"] and reply.parent == parent_id
    assert reply.origin == "patient" and len(reply.files) == 2
    manifest = vault.read_manifest(reply.id, vector["secret"])
    assert (manifest.sender, manifest.subject, manifest.text) == (
        vector["manifest"]["sender"], vector["manifest"]["subject"], vector["manifest"]["text"])
    assert [f.name for f in manifest.files] == [name for name, _, _ in FILES]
    for file, (_, _, data) in zip(manifest.files, FILES, strict=True):
        assert b"".join(vault.read_file(reply.id, vector["secret"], file.object_id)) == data
    info = vault.get(parent_id)
    assert info is not None and info.replies == 1


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * 65536])
def test_a_sealed_length_gives_back_its_plaintext_length(size: int) -> None:
    assert plaintext_size(ciphertext_size(size)) == size


@pytest.mark.parametrize("sealed", [0, 16, 31, 16 + 65552 + 15, 16 + 65552 + 16])
def test_lengths_no_sealed_object_can_have_are_refused(sealed: int) -> None:
    assert plaintext_size(sealed) is None


def damaged(vector: dict[str, Any], index: int, how: str) -> list[tuple[str, bytes]]:
    objects = objects_of(vector)
    object_id, data = objects[index]
    if how == "header":
        data = b"PLI2" + data[4:]
    elif how == "truncated":
        data = data[:16 + 65552 + 10]  # a last record shorter than its tag cannot be
    elif how == "same nonce base":
        data = data[:9] + objects[0][1][9:16] + data[16:]
    objects[index] = (object_id, data)
    return objects


@pytest.mark.parametrize(("index", "how"), [(0, "header"), (1, "header"), (2, "truncated"),
                                            (2, "same nonce base")])
def test_a_malformed_object_is_refused_and_nothing_of_the_reply_stays(
        vault: Vault, vector: dict[str, Any], index: int, how: str) -> None:
    parent_id = parent(vault)
    before = all_files(vault.root / "objects")
    with pytest.raises(UploadRefused) as refused:
        upload(vault, parent_id, vector, damaged(vector, index, how))
    assert refused.value.reason == "malformed"
    assert all_files(vault.root / "objects") == before
    assert list((vault.root / "tmp").iterdir()) == []
    assert vault.get(vector["link_id"]) is None


def test_documents_past_the_links_bound_are_cut_off_and_not_kept(
        vault: Vault, vector: dict[str, Any]) -> None:
    parent_id = parent(vault, bytes=50_000)
    with pytest.raises(UploadRefused) as refused:
        upload(vault, parent_id, vector, limits=ReplyLimits(2, 50_000))
    assert refused.value.reason == "too_large"
    assert list((vault.root / "tmp").iterdir()) == []
    assert not (vault.root / "objects" / vector["link_id"]).exists()
    with pytest.raises(UploadRefused) as too_many:
        upload(vault, parent_id, vector, limits=ReplyLimits(1, 100_000))
    assert too_many.value.reason == "too_large"


def test_objects_out_of_order_or_missing_are_refused(vault: Vault, vector: dict[str, Any]) -> None:
    parent_id = parent(vault)
    objects = objects_of(vector)
    swapped = [objects[0], objects[2], objects[1]]
    receiving = ReplyUpload(vault, parent_id, vector["link_id"],
                            [objects[1][0], objects[2][0]], LIMITS)
    with pytest.raises(UploadRefused):
        receiving.start(swapped[1][0])
    receiving.abort()
    partial = ReplyUpload(vault, parent_id, vector["link_id"],
                          [objects[1][0], objects[2][0]], LIMITS)
    partial.start("manifest")
    partial.write(objects[0][1])
    partial.end()
    with pytest.raises(UploadRefused):
        partial.finish(time.time(), max_replies=20)
    partial.abort()
    assert vault.get(vector["link_id"]) is None
    assert not (vault.root / "objects" / vector["link_id"]).exists()


def test_a_reply_to_a_revoked_link_is_refused_after_its_upload(
        vault: Vault, vector: dict[str, Any]) -> None:
    parent_id = parent(vault)
    receiving = upload(vault, parent_id, vector)
    vault.revoke(parent_id)  # while the reply was on its way
    with pytest.raises(UploadRefused) as refused:
        receiving.finish(time.time(), max_replies=20)
    receiving.abort()
    assert refused.value.reason == "unavailable"
    assert vault.get(vector["link_id"]) is None
    assert not (vault.root / "objects" / vector["link_id"]).exists()


def test_a_link_id_already_taken_or_ill_formed_is_refused(vault: Vault,
                                                          vector: dict[str, Any]) -> None:
    parent_id = parent(vault)
    for reply_id, reason in ((parent_id, "malformed"), ("-" + "A" * 21, "malformed"),
                             ("not an id", "malformed")):
        with pytest.raises(UploadRefused) as refused:
            ReplyUpload(vault, parent_id, reply_id, [], LIMITS)
        assert refused.value.reason == reason
    other = parent(vault)
    with pytest.raises(UploadRefused) as taken:
        ReplyUpload(vault, parent_id, other, [], LIMITS)
    assert taken.value.reason == "exists"
