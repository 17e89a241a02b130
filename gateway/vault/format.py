"""The vault format, version 1: keys, sealed objects and the manifest.

Everything here can be done in a browser with WebCrypto alone (HKDF-SHA256 and
AES-256-GCM), so the portal's script opens exactly what this module seals. The full
specification, with a worked example, is ``docs/vault-format.md``; in short:

- a link has a random 256-bit *secret* (only ever in the URL fragment) and a random
  128-bit *link id*; both travel as base64url without padding;
- ``HKDF-SHA256(ikm=secret, salt=link id bytes, info=b"pli v1 manifest" | b"pli v1 content")``
  gives two 256-bit AES keys;
- an *object* is a 16-byte header (``b"PLI1"``, version 1, record size 65536 as a 32-bit
  big-endian number, a 7-byte random nonce base) followed by records: the plaintext cut
  into 64 KiB pieces, each sealed with AES-256-GCM under the nonce
  ``nonce base || record index (4 bytes, big-endian) || last flag (0x00 or 0x01)`` and the
  associated data ``header || object id (ASCII)``. Only the last record may be shorter
  than 64 KiB; it is empty only when the whole plaintext is empty;
- the *manifest* (sender, subject, date, bodies, and the list of files) is UTF-8 JSON
  padded with spaces to a multiple of 512 bytes and sealed as the object ``"manifest"``
  with the manifest key; each file is sealed under its own random object id with the
  content key.

This module does no file or database I/O: it turns bytes into bytes, in streams.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
MAGIC = b"PLI1"
RECORD_SIZE = 64 * 1024
TAG_SIZE = 16
NONCE_BASE_SIZE = 7
HEADER_SIZE = len(MAGIC) + 1 + 4 + NONCE_BASE_SIZE  # 16
SECRET_SIZE = 32
LINK_ID_SIZE = 16
OBJECT_ID_SIZE = 16
MANIFEST_OBJECT_ID = "manifest"
MANIFEST_PADDING = 512
MANIFEST_INFO = b"pli v1 manifest"
CONTENT_INFO = b"pli v1 content"
MAX_RECORDS = 2**32

_HEADER = struct.Struct(">4sBI7s")
_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")

RandomBytes = Callable[[int], bytes]
"""Where randomness comes from: ``secrets.token_bytes`` in use, a fixed stream in tests."""


class VaultFormatError(Exception):
    """Sealed bytes that do not open: wrong key, tampered, truncated, extended or malformed.

    Deliberately vague about which: an attacker learns nothing from the message."""


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


Source = bytes | bytearray | memoryview | _Reader | Iterable[bytes | bytearray | memoryview]
"""Plaintext or ciphertext as the caller has it: in memory, anything with a binary
``read`` (a file, the vault store's reader), or chunks."""


# --- Identifiers and secrets -------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, size: int) -> bytes:
    """Decode base64url without padding, refusing anything but the one canonical spelling
    of exactly ``size`` bytes."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if len(data) != size or b64url_encode(data) != text:
        raise ValueError(f"expected {size} bytes in canonical base64url")
    return data


def is_link_id(text: str) -> bool:
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None and _canonical(text)


def is_object_id(text: str) -> bool:
    return text == MANIFEST_OBJECT_ID or is_link_id(text)


def _canonical(text: str) -> bool:
    try:
        b64url_decode(text, 16)
    except ValueError:
        return False
    return True


# --- Keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkKeys:
    """The two AES-256 keys of a link. Never written anywhere, never logged."""

    manifest: bytes = field(repr=False)
    content: bytes = field(repr=False)


def derive_keys(secret: bytes, link_id: bytes) -> LinkKeys:
    """HKDF-SHA256 from the link secret, salted with the link id's 16 bytes."""
    if len(secret) != SECRET_SIZE or len(link_id) != LINK_ID_SIZE:
        raise ValueError("a link secret is 32 bytes and a link id 16 bytes")

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=link_id, info=info).derive(secret)

    return LinkKeys(manifest=hkdf(MANIFEST_INFO), content=hkdf(CONTENT_INFO))


# --- Objects -----------------------------------------------------------------------------


def object_header(nonce_base: bytes) -> bytes:
    if len(nonce_base) != NONCE_BASE_SIZE:
        raise ValueError("a nonce base is 7 bytes")
    return _HEADER.pack(MAGIC, VERSION, RECORD_SIZE, nonce_base)


def parse_header(header: bytes) -> bytes:
    """Check a v1 object header and return its nonce base."""
    if len(header) != HEADER_SIZE:
        raise VaultFormatError("sealed object too short")
    magic, version, record_size, nonce_base = _HEADER.unpack(header)
    if magic != MAGIC or version != VERSION or record_size != RECORD_SIZE:
        raise VaultFormatError("not a version 1 sealed object")
    return bytes(nonce_base)


def record_nonce(nonce_base: bytes, index: int, last: bool) -> bytes:
    if not 0 <= index < MAX_RECORDS:
        raise VaultFormatError("too many records")
    return nonce_base + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def associated_data(header: bytes, object_id: str) -> bytes:
    """What every record of an object authenticates besides its own bytes: the header (so it
    cannot be swapped) and the object id (so one object cannot stand in for another)."""
    return header + object_id.encode("ascii")


def ciphertext_size(plaintext_size: int) -> int:
    records = max(1, -(-plaintext_size // RECORD_SIZE))
    return HEADER_SIZE + plaintext_size + records * TAG_SIZE


def plaintext_size(sealed_size: int) -> int | None:
    """The plaintext length a sealed object of ``sealed_size`` bytes holds, or None when
    no well-formed object has that length (no record, a last record shorter than its
    tag, an empty last record after others). Exact: ``ciphertext_size`` reversed."""
    body = sealed_size - HEADER_SIZE
    if body < TAG_SIZE:
        return None
    full, rest = divmod(body, RECORD_SIZE + TAG_SIZE)
    if rest == 0:
        records = full
    elif rest < TAG_SIZE or (rest == TAG_SIZE and full > 0):
        return None
    else:
        records = full + 1
    if records > MAX_RECORDS:
        return None
    return body - records * TAG_SIZE


def encrypt_object(
    key: bytes, object_id: str, source: Source, nonce_base: bytes
) -> Iterator[bytes]:
    """Seal ``source`` as one object: yields the header, then one sealed record at a time.

    Holds at most one record of plaintext besides the chunk the source is giving."""
    if not is_object_id(object_id):
        raise ValueError("invalid object id")
    header = object_header(nonce_base)
    aad = associated_data(header, object_id)
    aead = AESGCM(key)
    yield header
    index = 0
    for record, last in _records(iter_chunks(source)):
        yield aead.encrypt(record_nonce(nonce_base, index, last), record, aad)
        index += 1


def decrypt_object(key: bytes, object_id: str, source: Source) -> Iterator[bytes]:
    """Open a sealed object record by record, yielding only authenticated plaintext.

    Raises :class:`VaultFormatError` on a wrong key, any changed, missing, reordered or
    added byte. Data already yielded is authentic record by record, but the object as a
    whole is only known complete once the generator ends without an error."""
    reader = _reader(source)
    header = _read_exact(reader, HEADER_SIZE)
    nonce_base = parse_header(header)
    aad = associated_data(header, object_id)
    aead = AESGCM(key)
    sealed_size = RECORD_SIZE + TAG_SIZE
    current = _read_exact(reader, sealed_size)
    index = 0
    while True:
        following = _read_exact(reader, sealed_size) if len(current) == sealed_size else b""
        last = not following
        if len(current) < TAG_SIZE:
            raise VaultFormatError("sealed object truncated")
        try:
            plain = aead.decrypt(record_nonce(nonce_base, index, last), current, aad)
        except InvalidTag:
            raise VaultFormatError("sealed object does not open: wrong key or damaged") from None
        if last and index > 0 and not plain:
            raise VaultFormatError("sealed object has an empty record after data")
        yield plain
        if last:
            return
        current = following
        index += 1


def _records(
    chunks: Iterable[bytes | bytearray | memoryview],
) -> Iterator[tuple[bytes | memoryview, bool]]:
    """Cut a stream into records of RECORD_SIZE, telling which is the last one.

    A full record is only released once the next byte is known to exist, so the last
    record may be full, and an empty stream gives one empty last record."""
    buffer = bytearray()
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while view:
            if len(buffer) == RECORD_SIZE:
                yield bytes(buffer), False
                buffer.clear()
            if not buffer and len(view) > RECORD_SIZE:
                # Whole records straight from the caller's chunk, without copying them.
                yield view[:RECORD_SIZE], False
                view = view[RECORD_SIZE:]
                continue
            take = RECORD_SIZE - len(buffer)
            buffer += view[:take]
            view = view[take:]
    yield bytes(buffer), True


def iter_chunks(source: Source) -> Iterator[bytes | bytearray | memoryview]:
    """The source's bytes as chunks; a file is read 64 KiB at a time."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield source
    elif hasattr(source, "read"):
        reader: _Reader = source  # type: ignore[assignment]
        while chunk := reader.read(RECORD_SIZE):
            yield chunk
    else:
        for piece in source:
            if not isinstance(piece, bytes | bytearray | memoryview):
                raise TypeError("file content must be bytes, a binary file or byte chunks")
            yield piece


class _ChunkReader:
    """``read(n)`` over an iterable of byte chunks, without copying a big chunk twice."""

    def __init__(self, chunks: Iterator[bytes | bytearray | memoryview]) -> None:
        self._chunks = chunks
        self._view = memoryview(b"")

    def read(self, size: int = -1, /) -> bytes:
        parts: list[memoryview] = []
        wanted = size
        while wanted > 0:
            if not self._view:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._view = memoryview(chunk).cast("B")
                continue
            part, self._view = self._view[:wanted], self._view[wanted:]
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)


def _reader(source: Source) -> _Reader:
    if hasattr(source, "read"):
        return source  # type: ignore[return-value]
    return _ChunkReader(iter_chunks(source))


def _read_exact(reader: _Reader, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at the end of the stream."""
    data = reader.read(size)
    if len(data) == size or not data:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < size:
        more = reader.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


# --- The manifest --------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestFile:
    """One sealed file as the manifest describes it. ``name`` is health data."""

    name: str = field(repr=False)
    declared_type: str
    true_type: str
    size: int
    object_id: str


@dataclass(frozen=True)
class Manifest:
    """What the recipient sees besides the files: the original message, sealed.

    ``date`` is the original message's Date header as written (RFC 5322, e.g.
    ``Thu, 02 May 2024 09:15:00 +0200``; empty if it had none): the portal shows it.
    ``files`` is filled in by the sealer. Every text field is health data: none of them
    appears in ``repr``."""

    sender: str = field(repr=False)
    subject: str = field(repr=False)
    date: str
    text: str | None = field(default=None, repr=False)
    html: str | None = field(default=None, repr=False)
    files: tuple[ManifestFile, ...] = ()


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest's plaintext: compact UTF-8 JSON, padded with spaces to a multiple of
    512 bytes so the sealed size says little about the subject and body lengths."""
    document: dict[str, Any] = {
        "version": VERSION,
        "sender": manifest.sender,
        "subject": manifest.subject,
        "date": manifest.date,
        "text": manifest.text,
        "html": manifest.html,
        "files": [
            {
                "name": f.name,
                "declared_type": f.declared_type,
                "true_type": f.true_type,
                "size": f.size,
                "object": f.object_id,
            }
            for f in manifest.files
        ],
    }
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return data + b" " * (-len(data) % MANIFEST_PADDING)


def decode_manifest(data: bytes) -> Manifest:
    try:
        document = json.loads(data.decode("utf-8"))
        if document.get("version") != VERSION:
            raise VaultFormatError("not a version 1 manifest")
        files = tuple(
            ManifestFile(
                name=_str(f["name"]),
                declared_type=_str(f["declared_type"]),
                true_type=_str(f["true_type"]),
                size=_int(f["size"]),
                object_id=_str(f["object"]),
            )
            for f in document["files"]
        )
        return Manifest(
            sender=_str(document["sender"]),
            subject=_str(document["subject"]),
            date=_str(document["date"]),
            text=_optional_str(document["text"]),
            html=_optional_str(document["html"]),
            files=files,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise VaultFormatError("malformed manifest") from None


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _optional_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError("expected a size")
    return value
