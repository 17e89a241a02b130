"""Take a message apart into what goes into the vault: texts and files.

The parts that count as attachments are the ones the inspector reports (one walk for
both, ``gateway.inspect.mime.PartWalk``). On top of those, two kinds of file hide inside
text and are lifted out too: uuencoded blocks in a plain-text body and ``data:`` URIs
in an HTML body.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass, field
from email.message import Message

from gateway.inspect.mime import PartWalk, parse, true_type

_UUENCODED = re.compile(
    r"^begin [0-7]{3,4} ([^\r\n]+)\r?\n(.*?)^end[ \t]*$\r?\n?", re.M | re.S)
_DATA_URI = re.compile(
    r"data:([a-z0-9.+-]+/[a-z0-9.+-]+)?((?:;[a-z0-9.+-]+=[^;,\"'\s]*)*)(;base64)?,"
    r"([^\"'\s)>]*)", re.I)
_CID = re.compile(r"cid:([^\"'\s)>]+)", re.I)

INLINE_IMAGE_MAX = 64 * 1024


@dataclass(frozen=True)
class File:
    """One file for the vault. ``name`` is health data: never logged."""

    name: str
    declared_type: str
    true_type: str
    data: bytes
    content_id: str | None = None


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
                and f.true_type.startswith("image/") and len(f.data) <= INLINE_IMAGE_MAX]


def extract(content: bytes) -> Extracted:
    return extract_parsed(parse(content), content)


def extract_parsed(message: Message | None, content: bytes) -> Extracted:
    """Like :func:`extract`, for a message already parsed with ``inspect.parse``."""
    if message is None:
        return Extracted(text=content.decode("utf-8", "replace"))
    out = Extracted(subject=_header(message, "subject"), sender=_header(message, "from"),
                    date=_header(message, "date"))
    texts: list[str] = []
    htmls: list[str] = []
    for part in PartWalk().parts(message):
        if part.enclosed:
            continue  # inside a forwarded message, which travels whole
        if part.attachment:
            out.files.append(File(
                name=part.filename or _default_name(part.content_type, len(out.files) + 1),
                declared_type=part.content_type,
                true_type=part.true_type or "application/octet-stream",
                data=part.data,
                content_id=part.content_id,
            ))
        elif part.text is not None:
            (htmls if part.content_type == "text/html" else texts).append(part.text)
    out.text = "\n\n".join(_lift_uuencoded(t, out.files) for t in texts)
    out.html = "\n".join(_lift_data_uris(h, out.files) for h in htmls)
    return out


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
        files.append(File(name, "application/x-uuencode", true_type(bytes(data)), bytes(data)))
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
                          data))
        return ""
    return _DATA_URI.sub(take, html)


_EXTENSIONS = {"message/rfc822": "eml", "text/calendar": "ics", "application/pdf": "pdf",
               "application/ms-tnef": "dat", "image/png": "png", "image/jpeg": "jpg",
               "image/gif": "gif", "text/plain": "txt", "text/html": "html"}


def _default_name(content_type: str, n: int) -> str:
    stem = {"message/rfc822": "message", "application/ms-tnef": "winmail",
            "text/calendar": "invitation"}.get(content_type, f"piece-jointe-{n}")
    return f"{stem}.{_EXTENSIONS.get(content_type, 'bin')}"


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:
        return ""
    return " ".join(str(value).split()) if value is not None else ""
