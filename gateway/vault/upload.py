"""A link sealed in a browser (a secure reply), received as ciphertext and checked as it
streams in, before any of it is kept.

The writer's browser draws the new link's id, secret, object ids and nonce bases, and
seals the manifest and each document as ``docs/vault-format.md`` says; the server gets
only ciphertext (and, to write the notice, the link with its key, which it never keeps).
Here each object is written to ``tmp`` while it arrives, its header checked at once, its
size held to what the link allows (the bytes past the limit are never written), its
length checked to be one a sealed object can have; only when every object listed came
whole is the link's folder made durable and its index row written, in one transaction
with its parent's count of replies. Anything else leaves nothing behind.

    upload = ReplyUpload(vault, parent_id, reply_id, object_ids, limits)
    for object_id in upload.expected:            # "manifest" first, then the documents
        upload.start(object_id); upload.write(chunk) ...; upload.end()
    info = upload.finish(now, max_replies)       # or upload.abort()

Blocking throughout: the portal calls it from worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.vault.format import (
    HEADER_SIZE,
    MANIFEST_OBJECT_ID,
    MANIFEST_PADDING,
    VaultFormatError,
    ciphertext_size,
    is_link_id,
    parse_header,
    plaintext_size,
)
from gateway.vault.index import LinkInfo, StoredObject
from gateway.vault.objects import ObjectWriter, StoreUnavailable

if TYPE_CHECKING:
    from gateway.vault import Vault

MAX_MANIFEST = 256 * 1024
"""The most a reply's manifest may hold (its text and the list of its documents)."""


class UploadRefused(Exception):
    """``reason``: "malformed", "too_large", "exists" (the id is taken) or "unavailable"
    (the link replied to can no longer take a reply)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ReplyLimits:
    max_files: int
    max_bytes: int  # the documents' plaintext, all together


class ReplyUpload:
    def __init__(self, vault: Vault, parent_id: str, reply_id: str,
                 object_ids: Sequence[str], limits: ReplyLimits) -> None:
        if not (is_link_id(reply_id) and not reply_id.startswith("-")) or reply_id == parent_id:
            raise UploadRefused("malformed")
        if len(object_ids) > limits.max_files or len(set(object_ids)) != len(object_ids):
            raise UploadRefused("malformed" if len(object_ids) <= limits.max_files
                                else "too_large")
        if not all(is_link_id(o) and not o.startswith("-") for o in object_ids):
            raise UploadRefused("malformed")
        self.vault = vault
        self.parent_id = parent_id
        self.reply_id = reply_id
        self.limits = limits
        self.expected = (MANIFEST_OBJECT_ID, *object_ids)
        self.done: list[StoredObject] = []
        self.document_bytes = 0
        self._writer: ObjectWriter | None = None
        self._object = ""
        self._header = b""
        self._bases: set[bytes] = set()
        try:
            vault.store.new_link(reply_id)
        except FileExistsError:
            raise UploadRefused("exists") from None

    def start(self, object_id: str) -> None:
        if self._writer is not None or len(self.done) == len(self.expected) or (
                object_id != self.expected[len(self.done)]):
            raise UploadRefused("malformed")
        self._object = object_id
        self._header = b""
        self._writer = self.vault.store.writer(self.reply_id, object_id)

    def _most(self) -> int:
        """The longest this object may be once sealed."""
        if self._object == MANIFEST_OBJECT_ID:
            return ciphertext_size(MAX_MANIFEST)
        return ciphertext_size(self.limits.max_bytes - self.document_bytes)

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise UploadRefused("malformed")
        if writer.size + len(data) > self._most():
            raise UploadRefused("too_large")
        if len(self._header) < HEADER_SIZE:
            self._header += data[:HEADER_SIZE - len(self._header)]
            if len(self._header) == HEADER_SIZE:
                try:
                    base = parse_header(self._header)
                except VaultFormatError:
                    raise UploadRefused("malformed") from None
                if base in self._bases:  # one key and nonce pair must never serve twice
                    raise UploadRefused("malformed")
                self._bases.add(base)
        writer.write(data)

    def end(self) -> None:
        writer = self._writer
        if writer is None:
            raise UploadRefused("malformed")
        plain = plaintext_size(writer.size)
        if plain is None or len(self._header) < HEADER_SIZE:
            raise UploadRefused("malformed")
        if self._object == MANIFEST_OBJECT_ID:
            if plain == 0 or plain % MANIFEST_PADDING:
                raise UploadRefused("malformed")
        else:
            self.document_bytes += plain
            if self.document_bytes > self.limits.max_bytes:
                raise UploadRefused("too_large")
        size = writer.commit()
        self._writer = None
        self.done.append(StoredObject(self._object, size))

    def finish(self, now: float, max_replies: int) -> LinkInfo:
        if self._writer is not None or len(self.done) != len(self.expected):
            raise UploadRefused("malformed")
        self.vault.store.commit_link(self.reply_id)
        if not self.vault.index.create_reply(self.parent_id, self.reply_id, created=now,
                                             objects=self.done, max_replies=max_replies):
            raise UploadRefused("unavailable")
        info = self.vault.get(self.reply_id)
        assert info is not None
        return info

    def abort(self) -> None:
        """Nothing of this reply stays: its objects, its folder, and a row if it had one."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.vault.index.delete(self.reply_id)
        try:
            self.vault.store.remove_link(self.reply_id)
        except StoreUnavailable:  # no row: never served, and purged after an hour
            pass
