"""The vault: what a protected message leaves behind, encrypted, on the practice's machine.

The server keeps ciphertext and the few facts needed to enforce a link's limits; the key
to open it exists only in the link's URL fragment, which browsers never send. The format
is specified in ``docs/vault-format.md`` (and :mod:`gateway.vault.format`).

Public API (everything is blocking: call it from a worker thread, never on the event loop)::

    vault = Vault(settings.vault_dir)       # <data>/vault; folders and index made if needed
    vault = Vault(settings.vault_dir, store=SwiftStore(...))   # objects elsewhere (app.py)
    vault = Vault(settings.vault_dir, index=PostgresIndex(...))   # an index shared (app.py)

    link = vault.seal(manifest, files, sender=..., recipient=..., expires_at=...,
                      download_limit=5, access_code="4821" or None,   # 5 per document
                      options=LinkOptions(...), manage=True)
    link.id, link.secret                    # base64url; the secret is never stored
    link.fragment_url(portal_url)           # "<portal_url>/l/<id>#<secret>"
    link.manage_url(portal_url)             # "<portal_url>/m/<id>#<the sender's secret>"
    vault.discard(link.id)                  # the message could not be queued after all

    vault.links() / vault.get(id)           # LinkInfo rows, for `pli links list`
    vault.revoke(id)                        # refused from now on, deleted at the next purge
    vault.extend(id, days=7, downloads=2, bounded=True)   # later expiry, more downloads
    vault.purge(now)                        # expired and revoked links deleted for good

    vault.check_manage(id, secret)          # the sender's own secret (the revoke link)?
    vault.mark_opened(id, now)              # True the first time the message is read
    vault.expired_unopened(now) / mark_expiry_noticed(id, now)   # for the sender's notice

    vault.status(id, now) / is_usable(id, now)     # for the portal
    vault.check_code(id, code)              # CodeCheck(ok, remaining, locked)
    vault.grant_download(id, object_id, now)       # counts one: downloads left, or None
    vault.open_object(id, object_id, now, granted=False)
                                            # CiphertextReader: .size, .iter_range(start, end)

    vault.read_manifest(id, secret) / read_file(id, secret, object_id)   # tests and tools

``seal`` returns only once every object is on disk (fsync'd file and folder; in Swift,
stored on a quorum of replicas) and the index row is committed, so the caller may say 250
right after it; if it raises, nothing of the link is left that could be served (objects an
unreachable store could not delete have no index row and go at the next purge after an
hour). :class:`StoreUnavailable` says the object store could not be reached.
``recipient`` is the envelope address of one recipient group: one address, several
separated by commas (``"a@x.fr, b@y.fr"``), or a sequence of addresses;
the index stores them as a JSON list. ``manifest.files`` is filled in by ``seal`` from
``files`` (with sizes and object ids); whatever it holds on the way in is replaced.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway.vault.format import (
    LINK_ID_SIZE,
    MANIFEST_OBJECT_ID,
    NONCE_BASE_SIZE,
    OBJECT_ID_SIZE,
    SECRET_SIZE,
    Manifest,
    ManifestFile,
    RandomBytes,
    Source,
    VaultFormatError,
    b64url_decode,
    b64url_encode,
    decode_manifest,
    decrypt_object,
    derive_keys,
    encode_manifest,
    encrypt_object,
    is_link_id,
    iter_chunks,
)
from gateway.vault.index import (
    MAX_CODE_ATTEMPTS,
    CodeCheck,
    IndexVersionError,
    LinkIndex,
    LinkInfo,
    LinkOptions,
    LinkStatus,
    Purged,
    SqliteIndex,
    StoredObject,
    UnknownLink,
    hash_code,
    hash_manage_secret,
    normalise_code,
)
from gateway.vault.objects import CiphertextReader, ObjectStore, StoreUnavailable
from gateway.vault.store import FileStore

__all__ = [
    "CiphertextReader",
    "CodeCheck",
    "IndexVersionError",
    "LinkInfo",
    "LinkOptions",
    "LinkStatus",
    "LinkUnavailable",
    "Manifest",
    "ManifestFile",
    "Purged",
    "SealFile",
    "SealedLink",
    "StoreUnavailable",
    "StoredObject",
    "UnknownLink",
    "Vault",
    "VaultFormatError",
]

_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pli-code-hash")

ORPHAN_GRACE = 3600.0
"""A link folder without an index row is a seal that crashed; it goes once this old."""


class LinkUnavailable(Exception):
    """The link exists no more, or not for this request; ``status`` says why."""

    def __init__(self, status: LinkStatus) -> None:
        super().__init__(f"link {status}")
        self.status = status


@dataclass(frozen=True)
class SealFile:
    """One file to seal. ``data`` is bytes, a binary file open for reading, or an iterable
    of byte chunks; it is read once, in a stream. ``name`` is health data."""

    name: str = field(repr=False)
    declared_type: str
    true_type: str
    data: Source = field(repr=False)


@dataclass(frozen=True)
class SealedLink:
    id: str
    secret: str = field(repr=False)
    expires_at: float
    manage_secret: str | None = field(default=None, repr=False)

    def fragment_url(self, portal_url: str) -> str:
        return f"{portal_url.rstrip('/')}/l/{self.id}#{self.secret}"

    def manage_url(self, portal_url: str) -> str:
        """The sender's page for this link (revoke, extend): a secret of its own in the
        fragment, which is never in the recipients' link."""
        if self.manage_secret is None:
            raise ValueError("this link was sealed without a sender's page")
        return f"{portal_url.rstrip('/')}/m/{self.id}#{self.manage_secret}"


class Vault:
    """``store`` holds the sealed objects (files under ``root`` unless another is given);
    ``index`` is the link index (by default SQLite, ``root/index.sqlite3``).
    ``randbytes`` is where link ids, secrets, object ids and nonce bases come from; only
    the test vector replaces it."""

    def __init__(
        self,
        root: Path,
        *,
        store: ObjectStore | None = None,
        index: LinkIndex | None = None,
        max_code_attempts: int = MAX_CODE_ATTEMPTS,
        randbytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.store: ObjectStore = FileStore(root) if store is None else store
        self.index = index if index is not None else SqliteIndex(
            root / "index.sqlite3", max_code_attempts=max_code_attempts)
        self._random = randbytes
        self.store.create()
        self.index.create_schema()

    def close(self) -> None:
        """Let go of the object store's and the index's connections (Swift and PostgreSQL
        keep some)."""
        try:
            self.store.close()
        finally:
            self.index.close()

    # -- sealing ----------------------------------------------------------------------

    def seal(
        self,
        manifest: Manifest,
        files: Sequence[SealFile],
        *,
        sender: str,
        recipient: str | Sequence[str],
        expires_at: float,
        download_limit: int,
        access_code: str | None,
        options: LinkOptions = LinkOptions(),
        manage: bool = False,
    ) -> SealedLink:
        """Encrypt the message's text and files under a new link and make it durable.
        ``manage``: draw the sender's own secret too (only its hash is kept)."""
        recipients = _addresses(recipient)
        if not recipients or not all(recipients):
            raise ValueError("a link needs at least one recipient address")
        if download_limit < 1:
            raise ValueError("a link allows at least one download of each document")
        if access_code is not None and not normalise_code(access_code):
            raise ValueError("an access code cannot be empty")
        # scrypt takes as long as sealing tens of megabytes: it runs beside the sealing.
        hashing = None if access_code is None else _HASHING.submit(hash_code, access_code)
        created = time.time()

        link_id = self._new_id(LINK_ID_SIZE, set())
        link_bytes = b64url_decode(link_id, LINK_ID_SIZE)
        secret = self._random(SECRET_SIZE)
        keys = derive_keys(secret, link_bytes)
        manage_secret = secrets.token_bytes(SECRET_SIZE) if manage else None
        self.store.new_link(link_id)
        try:
            bases: set[bytes] = set()
            sealed: list[ManifestFile] = []
            objects: list[StoredObject] = []
            for file in files:
                object_id = self._new_id(OBJECT_ID_SIZE, {o.id for o in objects})
                counter = _Counted(file.data)
                size = self.store.write(
                    link_id, object_id,
                    encrypt_object(keys.content, object_id, counter, self._nonce_base(bases)),
                )
                sealed.append(ManifestFile(file.name, file.declared_type, file.true_type,
                                           counter.total, object_id))
                objects.append(StoredObject(object_id, size))
            plain = encode_manifest(replace(manifest, files=tuple(sealed)))
            size = self.store.write(
                link_id, MANIFEST_OBJECT_ID,
                encrypt_object(keys.manifest, MANIFEST_OBJECT_ID, plain, self._nonce_base(bases)),
            )
            self.store.commit_link(link_id)
            code_hash = None if hashing is None else hashing.result()
            self.index.create(
                link_id, created=created, expires=expires_at, download_limit=download_limit,
                code_hash=code_hash, sender=sender, recipients=recipients,
                objects=[StoredObject(MANIFEST_OBJECT_ID, size), *objects],
                options=options, manage_hash=None if manage_secret is None
                else hash_manage_secret(manage_secret),
            )
        except BaseException:
            try:
                self.store.remove_link(link_id)
            except StoreUnavailable:  # no row: never served, and purged after an hour
                pass
            raise
        return SealedLink(link_id, b64url_encode(secret), expires_at,
                          None if manage_secret is None else b64url_encode(manage_secret))

    def _new_id(self, size: int, taken: set[str]) -> str:
        """A random id, drawn again if it would begin with "-" (so that it can be typed as a
        command-line argument) or is already used in this link."""
        while True:
            new = b64url_encode(self._random(size))
            if not new.startswith("-") and new not in taken:
                return new

    def _nonce_base(self, taken: set[bytes]) -> bytes:
        """Objects of one link share a key, so their nonce bases must differ."""
        while True:
            base = self._random(NONCE_BASE_SIZE)
            if base not in taken:
                taken.add(base)
                return base

    def discard(self, link_id: str) -> bool:
        """Remove a link just sealed, row first: it stops being served before its files go."""
        if not is_link_id(link_id):
            return False
        known = self.index.delete(link_id)
        removed = self.store.remove_link(link_id)
        return known or removed.objects > 0

    # -- managing ---------------------------------------------------------------------

    def get(self, link_id: str) -> LinkInfo | None:
        return self.index.get(link_id) if is_link_id(link_id) else None

    def links(self) -> list[LinkInfo]:
        return self.index.links()

    def revoke(self, link_id: str, now: float | None = None) -> bool:
        if not is_link_id(link_id):
            return False
        return self.index.revoke(link_id, _now(now))

    def extend(self, link_id: str, *, days: float = 0, downloads: int = 0,
               now: float | None = None, bounded: bool = True) -> LinkInfo | None:
        """The link expires ``days`` later (counted from now if it has expired) and each
        document may be downloaded ``downloads`` more times; ``bounded``: no further than
        its maxima (what its rule let the sender give). The link as it now stands, or None
        when it is unknown or revoked."""
        if not is_link_id(link_id):
            return None
        if not self.index.extend(link_id, seconds=days * 86400, downloads=downloads,
                                 now=_now(now), bounded=bounded):
            return None
        return self.get(link_id)

    def check_manage(self, link_id: str, secret: str) -> bool:
        """Is ``secret`` (base64url, from the sender's link) this link's sender's?"""
        if not is_link_id(link_id):
            return False
        try:
            raw = b64url_decode(secret, SECRET_SIZE)
        except ValueError:
            return False
        return self.index.manage_matches(link_id, raw)

    def mark_opened(self, link_id: str, now: float | None = None) -> bool:
        """True only the first time the link's message is read."""
        return is_link_id(link_id) and self.index.mark_opened(link_id, _now(now))

    def expired_unopened(self, now: float | None = None) -> list[LinkInfo]:
        """Links expired without being opened, whose sender is to be told and is not yet."""
        found = (self.get(i) for i in self.index.expired_unopened(_now(now)))
        return [info for info in found if info is not None]

    def mark_expiry_noticed(self, link_id: str, now: float | None = None) -> bool:
        return self.index.mark_expiry_noticed(link_id, _now(now))

    def unmark_expiry_noticed(self, link_id: str) -> None:
        self.index.unmark_expiry_noticed(link_id)

    def purge(self, now: float | None = None) -> Purged:
        """Delete expired and revoked links for good: files first, then the row, so a
        crash in between is finished by the next purge. Also removes what crashed seals
        left behind (folders without a row, temporary files) after an hour."""
        now = _now(now)
        links = objects = size = 0
        for link_id in self.index.purgeable(now):
            removed = self.store.remove_link(link_id)
            self.index.delete(link_id)
            links += 1
            objects += removed.objects
            size += removed.bytes
        # Crash leftovers are judged by the wall clock, whatever ``now`` the caller gave.
        wall = time.time()
        known = self.index.ids()
        for link_id in self.store.link_ids():
            if link_id not in known and self.store.age(link_id, wall) > ORPHAN_GRACE:
                removed = self.store.remove_link(link_id)
                objects += removed.objects
                size += removed.bytes
        self.store.remove_stale_tmp(ORPHAN_GRACE, wall)
        return Purged(links=links, objects=objects, bytes=size)

    # -- serving ----------------------------------------------------------------------

    def status(self, link_id: str, now: float | None = None) -> LinkStatus:
        info = self.get(link_id)
        return "unknown" if info is None else info.status(_now(now))

    def is_usable(self, link_id: str, now: float | None = None) -> bool:
        """Not expired, not revoked, not locked, and a document with downloads left (or
        no documents at all)."""
        return self.status(link_id, now) == "ok"

    def check_code(self, link_id: str, code: str) -> CodeCheck:
        if not is_link_id(link_id):
            raise UnknownLink(link_id)
        return self.index.check_code(link_id, code)

    def grant_download(self, link_id: str, object_id: str,
                       now: float | None = None) -> int | None:
        """Count one download of a document before any of it is served: the downloads
        it has left after this one, or None when it may not be downloaded again (or the
        link is not usable). Exact when called from many threads or processes at once."""
        if not is_link_id(link_id):
            return None
        return self.index.grant_download(link_id, object_id, _now(now))

    def open_object(
        self, link_id: str, object_id: str, now: float | None = None, *,
        granted: bool = False,
    ) -> CiphertextReader:
        """An object's ciphertext, to serve as it is. Raises :class:`LinkUnavailable`
        unless the link is usable and lists this object (check the code first).
        ``granted``: this download was counted already (:meth:`grant_download`), so the
        link having no downloads left since then does not stop it."""
        info = self.get(link_id)
        if info is None:
            raise LinkUnavailable("unknown")
        status = info.status(_now(now))
        if status != "ok" and not (granted and status == "exhausted"):
            raise LinkUnavailable(status)
        if object_id not in {o.id for o in info.objects}:
            raise LinkUnavailable("unknown")
        return self.store.open(link_id, object_id)

    # -- opening (whoever holds the secret) ---------------------------------------------

    def read_manifest(self, link_id: str, secret: str) -> Manifest:
        keys = derive_keys(b64url_decode(secret, SECRET_SIZE), b64url_decode(link_id, 16))
        with self.store.open(link_id, MANIFEST_OBJECT_ID) as reader:
            plain = b"".join(decrypt_object(keys.manifest, MANIFEST_OBJECT_ID, reader))
        return decode_manifest(plain)

    def read_file(self, link_id: str, secret: str, object_id: str) -> Iterator[bytes]:
        """A sealed file's plaintext, record by record (raises VaultFormatError if damaged)."""
        keys = derive_keys(b64url_decode(secret, SECRET_SIZE), b64url_decode(link_id, 16))
        with self.store.open(link_id, object_id) as reader:
            yield from decrypt_object(keys.content, object_id, reader)


class _Counted:
    """Passes a source's chunks through, counting bytes: a file's size is known only once
    it has been read, and it is read only once."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.total = 0

    def __iter__(self) -> Iterator[bytes | bytearray | memoryview]:
        for chunk in iter_chunks(self.source):
            self.total += memoryview(chunk).nbytes
            yield chunk


def _addresses(recipient: str | Sequence[str]) -> tuple[str, ...]:
    """Envelope addresses (never quoted display names), so a comma always separates two."""
    parts = recipient.split(",") if isinstance(recipient, str) else recipient
    return tuple(a.strip() for a in parts if a.strip())


def _now(now: float | None) -> float:
    return time.time() if now is None else now
