"""The reply test vector: a link sealed the way a browser seals a secure reply.

The browser draws the link id, the secret, each document's object id and every object's
nonce base, writes the manifest and seals every object; the server only checks and
keeps the ciphertext. ``vector-reply-v1.json`` holds those inputs (drawn here from a
fixed seed) and the exact bytes that must come out: ``test_reply_vector.py`` rebuilds
them from the Python sealer and has the server take them as an upload, and the portal's
browser test seals the same inputs with ``vault.js`` and must get the same bytes.
Regenerate it only after a deliberate format change, with

    python -m tests.vault.reply_vector
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from gateway.vault.format import (
    MANIFEST_OBJECT_ID,
    NONCE_BASE_SIZE,
    Manifest,
    ManifestFile,
    b64url_decode,
    b64url_encode,
    derive_keys,
    encode_manifest,
    encrypt_object,
)
from tests.vault.vector import FixedRandom, pattern

VECTOR_PATH = Path(__file__).with_name("vector-reply-v1.json")
SEED = b"pli vault reply vector v1"

SENDER = "patient@example.org"
SUBJECT = "Réponse : Résultats d'analyse — \"Mme\" Dupont ✓"
DATE = "Wed, 02 Dec 2026 08:30:00 GMT"
TEXT = ("Bonjour Docteur,\nvoici l'ordonnance signée et une photo.\n\tMerci 😀\u0001\n"
        "Mme Dupont")
NOTE = "Ordonnance signée le 2 décembre.\n".encode()
PHOTO_SIZE = 70_000  # two records: a full one and a shorter last one
FILES = (("ordonnance signée.txt", "text/plain", NOTE),
         ("photo.jpg", "image/jpeg", pattern(PHOTO_SIZE)))


def _id(draw: FixedRandom) -> str:
    while True:  # as the browser does: drawn again when it would begin with "-"
        text = b64url_encode(draw(16))
        if not text.startswith("-"):
            return text


def build_vector() -> dict[str, Any]:
    draw = FixedRandom(SEED)
    link_id = _id(draw)
    secret = b64url_encode(draw(32))
    object_ids = [_id(draw) for _ in FILES]
    bases = [draw(NONCE_BASE_SIZE) for _ in range(len(FILES) + 1)]  # the manifest's first
    assert len(set(bases)) == len(bases)
    keys = derive_keys(b64url_decode(secret, 32), b64url_decode(link_id, 16))
    manifest = Manifest(sender=SENDER, subject=SUBJECT, date=DATE, text=TEXT, html=None,
                        files=tuple(ManifestFile(name, kind, "", len(data), object_id)
                                    for (name, kind, data), object_id in zip(FILES, object_ids, strict=True)))
    plain = encode_manifest(manifest)
    sealed_manifest = b"".join(encrypt_object(keys.manifest, MANIFEST_OBJECT_ID, plain,
                                              bases[0]))

    def sealed(index: int) -> bytes:
        data = FILES[index][2]
        return b"".join(encrypt_object(keys.content, object_ids[index], data, bases[index + 1]))

    return {
        "format": "pli vault v1, sealed in a browser (a secure reply)",
        "about": "Inputs drawn from SHAKE-256 of 'seed', in order: link id 16 bytes, secret "
        "32, each document's object id 16 (an id whose base64url begins with '-' is drawn "
        "again), then the nonce bases, 7 bytes each, the manifest's first. Spec: "
        "docs/vault-format.md, 'A link sealed in a browser'.",
        "seed": SEED.decode("ascii"),
        "link_id": link_id,
        "secret": secret,
        "manifest": {
            "sender": SENDER, "subject": SUBJECT, "date": DATE, "text": TEXT, "html": None,
            "nonce_base_hex": bases[0].hex(),
            "plaintext_b64": base64.b64encode(plain).decode("ascii"),
            "ciphertext_b64": base64.b64encode(sealed_manifest).decode("ascii"),
        },
        "files": [
            {
                "name": name, "declared_type": kind, "true_type": "", "size": len(data),
                "object_id": object_ids[index],
                "nonce_base_hex": bases[index + 1].hex(),
                **({"plaintext_b64": base64.b64encode(data).decode("ascii")} if index == 0
                   else {"plaintext_rule": "byte i is i mod 251"}),
                "plaintext_sha256": hashlib.sha256(data).hexdigest(),
                "ciphertext_b64": base64.b64encode(sealed(index)).decode("ascii"),
            }
            for index, (name, kind, data) in enumerate(FILES)
        ],
    }


def render(vector: dict[str, Any]) -> str:
    return json.dumps(vector, ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    VECTOR_PATH.write_text(render(build_vector()), encoding="utf-8")
