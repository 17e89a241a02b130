"""The v1 test vector: the sealer reproduces it, and the written spec opens it."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.vault.vector import SMALL_FILE, VECTOR_PATH, build_vector, pattern, render


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))
    return data


def test_the_sealer_reproduces_the_vector_byte_for_byte() -> None:
    assert render(build_vector()) == VECTOR_PATH.read_text(encoding="utf-8")


# What follows opens the vector the way docs/vault-format.md tells a browser to, using
# only HKDF and AES-GCM, and none of gateway.vault: the spec and the code must agree.


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def spec_key(secret: str, link_id: str, info: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=b64url(link_id), info=info.encode()).derive(
        b64url(secret)
    )


def spec_open(key: bytes, object_id: str, sealed: bytes) -> bytes:
    header, body = sealed[:16], sealed[16:]
    assert header[:4] == b"PLI1" and header[4] == 1
    record_size = int.from_bytes(header[5:9], "big")
    assert record_size == 65536
    base = header[9:16]
    aad = header + object_id.encode("ascii")
    step = record_size + 16
    count = max(1, -(-len(body) // step))
    out = []
    for i in range(count):
        nonce = base + i.to_bytes(4, "big") + bytes([i == count - 1])
        out.append(AESGCM(key).decrypt(nonce, body[i * step : (i + 1) * step], aad))
    return b"".join(out)


def test_the_spec_derives_the_vector_keys(vector: dict[str, Any]) -> None:
    manifest_key = spec_key(vector["secret"], vector["link_id"], vector["manifest_info"])
    content_key = spec_key(vector["secret"], vector["link_id"], vector["content_info"])
    assert manifest_key.hex() == vector["manifest_key_hex"]
    assert content_key.hex() == vector["content_key_hex"]
    assert vector["url"].endswith(f"/l/{vector['link_id']}#{vector['secret']}")


def test_the_spec_opens_the_manifest(vector: dict[str, Any]) -> None:
    key = spec_key(vector["secret"], vector["link_id"], vector["manifest_info"])
    entry = vector["manifest"]
    plain = spec_open(key, "manifest", base64.b64decode(entry["ciphertext_b64"]))
    assert len(plain) == entry["padded_size"] and len(plain) % 512 == 0
    assert plain.decode("utf-8").rstrip(" ") == entry["json"]
    document = json.loads(plain)
    assert [f["object"] for f in document["files"]] == [f["object_id"] for f in vector["files"]]
    assert [f["size"] for f in document["files"]] == [len(SMALL_FILE), 65537]


def test_the_spec_opens_the_files(vector: dict[str, Any]) -> None:
    key = spec_key(vector["secret"], vector["link_id"], vector["content_info"])
    small, patterned = vector["files"]
    plain = spec_open(key, small["object_id"], base64.b64decode(small["ciphertext_b64"]))
    assert plain == base64.b64decode(small["plaintext_b64"]) == SMALL_FILE
    sealed = base64.b64decode(patterned["ciphertext_b64"])
    assert hashlib.sha256(sealed).hexdigest() == patterned["ciphertext_sha256"]
    assert len(patterned["nonces_hex"]) == 2 and patterned["nonces_hex"][1].endswith("0000000101")
    assert spec_open(key, patterned["object_id"], sealed) == pattern(65537)


def test_the_spec_refuses_the_vector_with_a_key_swapped(vector: dict[str, Any]) -> None:
    manifest_key = spec_key(vector["secret"], vector["link_id"], vector["manifest_info"])
    small = vector["files"][0]
    with pytest.raises(InvalidTag):
        spec_open(manifest_key, small["object_id"], base64.b64decode(small["ciphertext_b64"]))
