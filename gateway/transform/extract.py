"""Take a message apart into what goes into the vault: texts and files.

The parts that count as attachments are the ones the inspector found (one walk for both,
``gateway.inspect``); a file's bytes are decoded from the message file when it is sealed,
as a stream, never held whole. A body text too long to be read as text (see
``inspect.MAX_TEXT``) is sealed as a file of its own: nothing is left out. Two kinds of
file hide inside text and are lifted out too: uuencoded blocks in a plain-text body and
``data:`` URIs in an HTML body.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.inspect import Inspection, Leaf
from gateway.inspect.mime import true_type
from gateway.message.model import Message
from gateway.message.params import decode_words
from gateway.message.scan import Part

_UUENCODED = re.compile(
    r"^begin [0-7]{3,4} ([^\r\n]+)\r?\n(.*?)^end[ \t]*\r?$\n?", re.M | re.S)
_DATA_URI = re.compile(
    r"data:([a-z0-9.+-]+/[a-z0-9.+-]+)?((?:;[a-z0-9.+-]+=[^;,\"'\s]*)*)(;base64)?,"
    r"([^\"'\s)>]*)", re.I)
_CID = re.compile(r"cid:([^\"'\s)>]+)", re.I)

INLINE_IMAGE_MAX = 64 * 1024


@dataclass(frozen=True)
class File:
    """One file for the vault. ``name`` is health data: never logged. ``chunks`` gives
    its bytes when called (decoded from the message file, or held when small); ``part``
    is the MIME part it comes from, if it is one (a notice that keeps attachments copies
    the part as it came)."""

    name: str
    declared_type: str
    true_type: str
    chunks: Callable[[], Iterable[bytes]] = field(repr=False)
    size: int
    content_id: str | None = None
    part: Part | None = None

    def read(self) -> bytes:
        return b"".join(self.chunks())


@dataclass
class Extracted:
    subject: str = ""
    sender: str = ""
    date: str = ""
    text: str = ""
    html: str = ""
    files: list[File] = field(default_factory=list)

    def inline_images(self) -> list[File]:
        """Small images the HTML body refers to by ``cid:`` (signature logos)."""
        wanted = {urllib.parse.unquote(m).strip("<>") for m in _CID.findall(self.html)}
        return [f for f in self.files if f.content_id in wanted
                and f.true_type.startswith("image/") and f.size <= INLINE_IMAGE_MAX]


def extract(message: Message, inspection: Inspection) -> Extracted:
    header = message.header
    sender = header.get("from") or ""
    out = Extracted(subject=inspection.facts.subject,
                    sender=" ".join(decode_words(sender).split()),
                    date=" ".join((header.get("date") or "").split()))
    texts: list[str] = []
    htmls: list[str] = []
    for leaf in inspection.leaves:
        if leaf.enclosed:
            continue  # inside a forwarded message, which travels whole
        if leaf.attachment or leaf.text is None or not leaf.text_complete:
            out.files.append(_file(message, leaf, len(out.files) + 1))
        else:
            (htmls if leaf.content_type == "text/html" else texts).append(leaf.text)
    out.text = "\n\n".join(_lift_uuencoded(t, out.files) for t in texts)
    out.html = "\n".join(_lift_data_uris(h, out.files) for h in htmls)
    return out


def _file(message: Message, leaf: Leaf, n: int) -> File:
    part = leaf.part

    def chunks() -> Iterable[bytes]:
        # A forwarded message is not encoded: it is sealed as it is, headers and all.
        return message.decoded(part)

    size = leaf.size if leaf.attachment else message.decoded_size(part)
    kind = leaf.true_type or (leaf.content_type if leaf.content_type.startswith("text/")
                              else "application/octet-stream")
    name = leaf.filename or _default_name(leaf.content_type, n, body=not leaf.attachment)
    return File(name, leaf.content_type, kind, chunks, size, leaf.content_id, part)


def _held(data: bytes) -> Callable[[], Iterable[bytes]]:
    return lambda: (data,)


def _lift_uuencoded(text: str, files: list[File]) -> str:
    def take(match: re.Match[str]) -> str:
        data = bytearray()
        try:
            for line in match.group(2).splitlines():
                if line.strip() in ("", "`"):
                    continue
                data += binascii.a2b_uu(line)
        except binascii.Error:
            return match.group(0)
        name = match.group(1).strip() or _default_name("application/octet-stream", len(files) + 1)
        files.append(File(name, "application/x-uuencode", true_type(bytes(data)),
                          _held(bytes(data)), len(data)))
        return ""
    return _UUENCODED.sub(take, text)


def _lift_data_uris(html: str, files: list[File]) -> str:
    def take(match: re.Match[str]) -> str:
        declared = (match.group(1) or "text/plain").lower()
        payload = match.group(4)
        try:
            if match.group(3):
                data = base64.b64decode(urllib.parse.unquote(payload) + "==", validate=False)
            else:
                data = urllib.parse.unquote_to_bytes(payload)
        except (binascii.Error, ValueError):
            data = payload.encode()
        files.append(File(_default_name(declared, len(files) + 1), declared, true_type(data),
                          _held(data), len(data)))
        return ""
    return _DATA_URI.sub(take, html)


_EXTENSIONS = {"message/rfc822": "eml", "message/global": "eml", "text/calendar": "ics",
               "application/pdf": "pdf", "application/ms-tnef": "dat", "image/png": "png",
               "image/jpeg": "jpg", "image/gif": "gif", "text/plain": "txt",
               "text/html": "html", "message/delivery-status": "txt",
               "message/rfc822-headers": "txt", "text/rfc822-headers": "txt"}


def _default_name(content_type: str, n: int, body: bool = False) -> str:
    if body:
        return f"message.{_EXTENSIONS.get(content_type, 'txt')}"
    stem = {"message/rfc822": "message", "message/global": "message",
            "application/ms-tnef": "winmail", "text/calendar": "invitation",
            "message/delivery-status": "rapport-de-remise"}.get(content_type,
                                                                  f"piece-jointe-{n}")
    return f"{stem}.{_EXTENSIONS.get(content_type, 'bin')}"
