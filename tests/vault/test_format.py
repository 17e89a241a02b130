"""The v1 object format: round trips, and every kind of damage refused."""

from __future__ import annotations

import io
import os
import random

import pytest

from gateway.vault.format import (
    HEADER_SIZE,
    MANIFEST_PADDING,
    RECORD_SIZE,
    TAG_SIZE,
    Manifest,
    ManifestFile,
    VaultFormatError,
    b64url_decode,
    b64url_encode,
    ciphertext_size,
    decode_manifest,
    decrypt_object,
    derive_keys,
    encode_manifest,
    encrypt_object,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
OBJECT = "AAECAwQFBgcICQoLDA0ODw"
SEALED_RECORD = RECORD_SIZE + TAG_SIZE
SIZES = [0, 1, RECORD_SIZE - 1, RECORD_SIZE, RECORD_SIZE + 1, 2 * RECORD_SIZE, 3_000_017]


def seal(data: bytes, *, base: bytes = b"\x01" * 7, object_id: str = OBJECT) -> bytes:
    return b"".join(encrypt_object(KEY, object_id, data, base))


def unseal(sealed: bytes, *, key: bytes = KEY, object_id: str = OBJECT) -> bytes:
    return b"".join(decrypt_object(key, object_id, io.BytesIO(sealed)))


def records(sealed: bytes) -> list[bytes]:
    body = sealed[HEADER_SIZE:]
    return [body[i : i + SEALED_RECORD] for i in range(0, len(body), SEALED_RECORD)]


def assemble(header: bytes, parts: list[bytes]) -> bytes:
    return header + b"".join(parts)


@pytest.mark.parametrize("size", SIZES)
def test_content_of_any_size_comes_back_exactly(size: int) -> None:
    data = os.urandom(size)
    sealed = seal(data)
    assert len(sealed) == ciphertext_size(size)
    assert unseal(sealed) == data


def test_an_empty_file_is_one_empty_last_record() -> None:
    sealed = seal(b"")
    assert len(sealed) == HEADER_SIZE + TAG_SIZE
    assert list(decrypt_object(KEY, OBJECT, sealed)) == [b""]


def test_exactly_one_record_of_content_makes_one_full_last_record() -> None:
    sealed = seal(os.urandom(RECORD_SIZE))
    assert len(records(sealed)) == 1
    assert len(sealed) == HEADER_SIZE + SEALED_RECORD


def test_decryption_streams_one_record_at_a_time() -> None:
    data = os.urandom(2 * RECORD_SIZE + 5)
    pieces = list(decrypt_object(KEY, OBJECT, seal(data)))
    assert [len(p) for p in pieces] == [RECORD_SIZE, RECORD_SIZE, 5]


@pytest.mark.parametrize("shape", ["bytes", "file", "tiny chunks", "odd chunks", "one big"])
def test_every_kind_of_source_seals_the_same_bytes(shape: str) -> None:
    data = os.urandom(RECORD_SIZE * 2 + 1234)
    rng = random.Random(7)

    def odd_chunks() -> list[bytes]:
        out, i = [], 0
        while i < len(data):
            n = rng.choice([1, 17, 4096, RECORD_SIZE - 1, RECORD_SIZE + 3, 200_000])
            out.append(data[i : i + n])
            i += n
        return out

    sources = {
        "bytes": data,
        "file": io.BytesIO(data),
        "tiny chunks": [data[i : i + 1000] for i in range(0, len(data), 1000)],
        "odd chunks": odd_chunks(),
        "one big": [bytearray(data)],
    }
    assert seal(sources[shape]) == seal(data)  # type: ignore[arg-type]
    sealed = seal(data)
    as_chunks = [sealed[i : i + 777] for i in range(0, len(sealed), 777)]
    assert b"".join(decrypt_object(KEY, OBJECT, as_chunks)) == data


def test_a_small_object_refuses_a_change_to_any_byte() -> None:
    sealed = seal(b"x")
    for position in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x01
        with pytest.raises(VaultFormatError):
            unseal(bytes(damaged))


def test_a_large_object_refuses_changes_anywhere() -> None:
    sealed = seal(os.urandom(2 * RECORD_SIZE + 100))
    positions = set(range(HEADER_SIZE))
    for start in range(HEADER_SIZE, len(sealed), SEALED_RECORD):
        positions |= {start, start + 1, start + SEALED_RECORD - TAG_SIZE - 1,
                      start + SEALED_RECORD - TAG_SIZE, start + SEALED_RECORD - 1}
    positions |= set(random.Random(3).sample(range(len(sealed)), 40))
    positions = {p for p in positions if p < len(sealed)}
    for position in sorted(positions):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x80
        with pytest.raises(VaultFormatError):
            unseal(bytes(damaged))


def test_swapped_records_are_refused() -> None:
    sealed = seal(os.urandom(3 * RECORD_SIZE))
    header, parts = sealed[:HEADER_SIZE], records(sealed)
    with pytest.raises(VaultFormatError):
        unseal(assemble(header, [parts[1], parts[0], parts[2]]))


def test_a_truncated_last_record_is_refused() -> None:
    sealed = seal(os.urandom(RECORD_SIZE + 500))
    for cut in (1, 16, 17, 516):
        with pytest.raises(VaultFormatError):
            unseal(sealed[:-cut])


def test_dropping_whole_records_is_refused() -> None:
    sealed = seal(os.urandom(3 * RECORD_SIZE))
    header, parts = sealed[:HEADER_SIZE], records(sealed)
    with pytest.raises(VaultFormatError):
        unseal(assemble(header, parts[:2]))
    with pytest.raises(VaultFormatError):
        unseal(header)


def test_no_record_is_yielded_after_the_truncation_point_goes_unnoticed() -> None:
    sealed = seal(os.urandom(3 * RECORD_SIZE))
    header, parts = sealed[:HEADER_SIZE], records(sealed)
    opened = decrypt_object(KEY, OBJECT, assemble(header, parts[:2]))
    assert len(next(opened)) == RECORD_SIZE  # record 0 is authentic and not last
    with pytest.raises(VaultFormatError):
        next(opened)  # record 1 was not sealed as the last one


def test_an_appended_record_is_refused() -> None:
    sealed = seal(os.urandom(RECORD_SIZE + 10))
    header, parts = sealed[:HEADER_SIZE], records(sealed)
    with pytest.raises(VaultFormatError):
        unseal(assemble(header, [*parts, parts[0]]))
    with pytest.raises(VaultFormatError):
        unseal(sealed + b"\x00")
    full = seal(os.urandom(RECORD_SIZE))  # a full last record followed by anything
    with pytest.raises(VaultFormatError):
        unseal(full + seal(b"")[HEADER_SIZE:])


def test_headers_swapped_between_objects_are_refused() -> None:
    first = seal(b"first file", base=b"\x01" * 7)
    second = seal(b"second one", base=b"\x02" * 7)
    with pytest.raises(VaultFormatError):
        unseal(second[:HEADER_SIZE] + first[HEADER_SIZE:])


def test_one_object_cannot_stand_in_for_another() -> None:
    sealed = seal(b"the first file", object_id=OBJECT)
    with pytest.raises(VaultFormatError):
        unseal(sealed, object_id="BAECAwQFBgcICQoLDA0ODw")


def test_a_wrong_key_is_refused() -> None:
    sealed = seal(b"secret")
    with pytest.raises(VaultFormatError):
        unseal(sealed, key=OTHER_KEY)


def test_a_wrong_secret_gives_keys_that_do_not_open() -> None:
    link = os.urandom(16)
    right, wrong = derive_keys(os.urandom(32), link), derive_keys(os.urandom(32), link)
    sealed = b"".join(encrypt_object(right.content, OBJECT, b"data", b"\x00" * 7))
    with pytest.raises(VaultFormatError):
        b"".join(decrypt_object(wrong.content, OBJECT, sealed))
    with pytest.raises(VaultFormatError):
        b"".join(decrypt_object(right.manifest, OBJECT, sealed))


def test_other_versions_and_record_sizes_are_refused() -> None:
    sealed = bytearray(seal(b"data"))
    for position, value in ((0, ord("X")), (4, 2), (7, 0x02)):
        damaged = bytearray(sealed)
        damaged[position] = value
        with pytest.raises(VaultFormatError, match="version 1"):
            unseal(bytes(damaged))
    with pytest.raises(VaultFormatError):
        unseal(bytes(sealed[:10]))


def test_manifest_and_content_keys_differ_and_depend_on_the_link() -> None:
    secret = os.urandom(32)
    keys = derive_keys(secret, b"\x00" * 16)
    assert keys.manifest != keys.content
    assert derive_keys(secret, b"\x01" * 16).content != keys.content
    assert repr(keys) == "LinkKeys()"


def test_the_manifest_is_padded_json_that_comes_back_whole() -> None:
    manifest = Manifest(
        sender="Dr Martin", subject="Résultats", date="Thu, 02 May 2024 09:15:00 +0200",
        text="ligne 1\nligne 2", html=None,
        files=(ManifestFile("compte rendu.pdf", "application/pdf", "application/pdf", 12,
                            OBJECT),),
    )
    encoded = encode_manifest(manifest)
    assert len(encoded) % MANIFEST_PADDING == 0
    assert encoded.rstrip(b" ").endswith(b"}")
    assert decode_manifest(encoded) == manifest
    assert "Résultats" not in repr(manifest) and "compte rendu" not in repr(manifest)


def test_a_malformed_manifest_is_a_format_error() -> None:
    for data in (b"\xff", b"[]", b"{}", b'{"version":2}', b'{"version":1,"files":[1]}'):
        with pytest.raises(VaultFormatError):
            decode_manifest(data)


def test_base64url_ids_are_unpadded_and_canonical() -> None:
    data = bytes(range(16))
    text = b64url_encode(data)
    assert len(text) == 22 and "=" not in text
    assert b64url_decode(text, 16) == data
    for bad in (text + "=", text[:-1], text[:-1] + "B", text.replace("A", "+"), "é" * 22):
        with pytest.raises(ValueError):
            b64url_decode(bad, 16)
    assert len(b64url_encode(os.urandom(32))) == 43
