"""The v1 test vector: one link sealed with fixed randomness, written out in full.

``vector-v1.json`` is what this module builds; ``test_vector.py`` rebuilds it and compares
byte for byte, and the portal's browser test decrypts the same file with WebCrypto. After a
deliberate format change (a new version), regenerate it with

    python -m tests.vault.vector
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from gateway.vault import Manifest, SealFile, Vault
from gateway.vault.format import (
    CONTENT_INFO,
    HEADER_SIZE,
    MANIFEST_INFO,
    MANIFEST_OBJECT_ID,
    RECORD_SIZE,
    TAG_SIZE,
    b64url_decode,
    derive_keys,
    parse_header,
    record_nonce,
)

VECTOR_PATH = Path(__file__).with_name("vector-v1.json")
SEED = b"pli vault test vector v1"

MANIFEST = Manifest(
    sender="Cabinet Martin <secretariat@cabinet-martin.example>",
    subject="Résultats d'analyse — Mme Dupont",
    date="Thu, 02 May 2024 09:15:00 +0200",
    text="Bonjour,\nVoici vos résultats de prise de sang.\nDr Martin\n",
    html="<p>Bonjour,</p><p>Voici vos résultats de prise de sang.</p><p>Dr Martin</p>",
)
SMALL_FILE = "Glycémie à jeun : 0,95 g/L\nHbA1c : 5,4 %\n".encode()
PATTERN_SIZE = RECORD_SIZE + 1  # two records: a full one, then a 1-byte last one


def pattern(size: int) -> bytes:
    """Byte i is i mod 251: easy to rebuild in JavaScript, never repeats on a record."""
    return bytes(i % 251 for i in range(size))


class FixedRandom:
    """Deterministic "randomness": SHAKE-256 of a seed, read front to back."""

    def __init__(self, seed: bytes) -> None:
        self._stream = hashlib.shake_256(seed).digest(4096)
        self._offset = 0

    def __call__(self, size: int) -> bytes:
        data = self._stream[self._offset : self._offset + size]
        self._offset += size
        assert len(data) == size
        return data


def build_vector() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        vault = Vault(Path(tmp) / "vault", randbytes=FixedRandom(SEED))
        link = vault.seal(
            MANIFEST,
            [
                SealFile("résultats analyse.txt", "text/plain", "text/plain", SMALL_FILE),
                SealFile("motif.bin", "application/octet-stream", "application/octet-stream",
                         pattern(PATTERN_SIZE)),
            ],
            sender="secretariat@cabinet-martin.example",
            recipient="patient@example.org",
            expires_at=1_900_000_000.0,
            download_limit=5,
            access_code=None,
        )
        objects_dir = vault.store.link_dir(link.id)
        info = vault.get(link.id)
        assert info is not None
        sealed = {o.id: (objects_dir / o.id).read_bytes() for o in info.objects}
        opened = vault.read_manifest(link.id, link.secret)

    link_bytes = b64url_decode(link.id, 16)
    keys = derive_keys(b64url_decode(link.secret, 32), link_bytes)
    manifest_plain = (
        json.dumps(_manifest_document(opened), ensure_ascii=False, separators=(",", ":"))
    )

    def describe(object_id: str, plaintext: bytes) -> dict[str, Any]:
        ciphertext = sealed[object_id]
        header = ciphertext[:HEADER_SIZE]
        base = parse_header(header)
        records = max(1, -(-len(plaintext) // RECORD_SIZE))
        return {
            "object_id": object_id,
            "header_hex": header.hex(),
            "nonce_base_hex": base.hex(),
            "aad_hex": (header + object_id.encode("ascii")).hex(),
            "nonces_hex": [
                record_nonce(base, i, i == records - 1).hex() for i in range(records)
            ],
            "plaintext_size": len(plaintext),
            "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
            "ciphertext_size": len(ciphertext),
            "ciphertext_sha256": hashlib.sha256(ciphertext).hexdigest(),
            "ciphertext_b64": base64.b64encode(ciphertext).decode("ascii"),
        }

    small, patterned = opened.files
    padded = len(manifest_plain.encode("utf-8"))
    padded += -padded % 512
    return {
        "format": "pli vault v1",
        "about": "One link sealed with fixed randomness (SHAKE-256 of 'seed', read in order: "
        "link id 16 bytes, secret 32, then per file object id 16 and nonce base 7, then the "
        "manifest's nonce base 7; an id whose base64url begins with '-' is drawn again). "
        "Spec: docs/vault-format.md.",
        "seed": SEED.decode("ascii"),
        "record_size": RECORD_SIZE,
        "tag_size": TAG_SIZE,
        "link_id": link.id,
        "secret": link.secret,
        "url": link.fragment_url("https://portail.cabinet-martin.example"),
        "hkdf_salt_hex": link_bytes.hex(),
        "manifest_info": MANIFEST_INFO.decode("ascii"),
        "content_info": CONTENT_INFO.decode("ascii"),
        "manifest_key_hex": keys.manifest.hex(),
        "content_key_hex": keys.content.hex(),
        "manifest": {
            **describe(MANIFEST_OBJECT_ID, _plain_manifest(manifest_plain)),
            "json": manifest_plain,
            "padded_size": padded,
        },
        "files": [
            {
                **describe(small.object_id, SMALL_FILE),
                "name": small.name,
                "plaintext_b64": base64.b64encode(SMALL_FILE).decode("ascii"),
            },
            {
                **describe(patterned.object_id, pattern(PATTERN_SIZE)),
                "name": patterned.name,
                "plaintext_rule": "byte i is i mod 251",
            },
        ],
    }


def _manifest_document(manifest: Manifest) -> dict[str, Any]:
    return {
        "version": 1,
        "sender": manifest.sender,
        "subject": manifest.subject,
        "date": manifest.date,
        "text": manifest.text,
        "html": manifest.html,
        "files": [
            {"name": f.name, "declared_type": f.declared_type, "true_type": f.true_type,
             "size": f.size, "object": f.object_id}
            for f in manifest.files
        ],
    }


def _plain_manifest(text: str) -> bytes:
    data = text.encode("utf-8")
    return data + b" " * (-len(data) % 512)


def render(vector: dict[str, Any]) -> str:
    return json.dumps(vector, ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    VECTOR_PATH.write_text(render(build_vector()), encoding="utf-8")
