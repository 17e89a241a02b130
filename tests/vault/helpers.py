"""A vault in a temporary folder and a message to seal into it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from gateway.vault import Manifest, SealedLink, SealFile, Vault

SENDER = "secretariat@cabinet-martin.example"
RECIPIENT = "patient@example.org"
DAY = 86400.0


def manifest(subject: str = "Compte rendu", text: str = "Bonjour") -> Manifest:
    return Manifest(
        sender="Cabinet Martin <secretariat@cabinet-martin.example>",
        subject=subject,
        date="Thu, 02 May 2024 09:15:00 +0200",
        text=text,
        html=f"<p>{text}</p>",
    )


def seal(
    vault: Vault,
    files: Sequence[SealFile] = (),
    *,
    code: str | None = None,
    expires_in: float = 14 * DAY,
    download_limit: int = 5,
    message: Manifest | None = None,
) -> SealedLink:
    return vault.seal(
        message or manifest(),
        files or [SealFile("note.txt", "text/plain", "text/plain", b"hello")],
        sender=SENDER,
        recipient=RECIPIENT,
        expires_at=time.time() + expires_in,
        download_limit=download_limit,
        access_code=code,
    )


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
