"""Structured MIME field values: Content-Type and Content-Disposition with their
parameters (RFC 2045, RFC 2231), and encoded words in unstructured text (RFC 2047).

Lenient where mailers are sloppy, so that a file's name is not lost: an encoded word in a
parameter is decoded quoted or not (``filename==?utf-8?B?...?=``, as some mailers write
it), and a name written as a Windows path (``"C:\\TEMP\\photo.png"``) keeps its last
component. Never raises: unreadable text gives the defaults RFC 2045 prescribes.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

_TOKEN_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SECTION = re.compile(r"^(?P<name>[^*]+)(?:\*(?P<n>\d+))?(?P<star>\*)?$")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def split_params(value: str) -> tuple[str, list[tuple[str, str, bool]]]:
    """The value before the first ``;`` (stripped) and its parameters as
    ``(name lower-cased, raw value, was quoted)``, quotes removed but escapes kept."""
    if '"' not in value:  # no quoted string: every ";" separates
        parts = value.split(";")
        return parts[0].strip(), [(n, r, False) for n, r in _unquoted(parts[1:])]
    parts = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    params: list[tuple[str, str, bool]] = []
    for part in parts[1:]:
        name, sep, raw = part.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        raw = raw.strip()
        was_quoted = len(raw) >= 2 and raw[0] == raw[-1] == '"'
        params.append((name, raw[1:-1] if was_quoted else raw, was_quoted))
    return parts[0].strip(), params


def _unquoted(parts: list[str]) -> list[tuple[str, str]]:
    found = []
    for part in parts:
        name, sep, raw = part.partition("=")
        name = name.strip().lower()
        if sep and name:
            found.append((name, raw.strip()))
    return found


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """``(first value, parameters)``: RFC 2231 sections and charsets joined and decoded,
    escapes in quoted values undone, encoded words decoded. The first value is
    returned as written (stripped); callers lower-case what they compare."""
    first, raw = split_params(value)
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    for name, text, quoted in raw:
        match = _SECTION.match(name)
        if match is None or (match.group("n") is None and match.group("star") is None):
            if name not in plain:  # the first of two wins, as in the standard library
                plain[name] = _unquote(text) if quoted else text
            continue
        number = int(match.group("n") or 0)
        sections.setdefault(match.group("name"), {}).setdefault(
            number, (text if match.group("star") else _unquote(text),
                     bool(match.group("star"))))
    for name, pieces in sections.items():
        if name in plain:
            continue  # a plain value and RFC 2231 sections: keep the plain one
        plain[name] = _join_sections(pieces)
    return first, {k: decode_words(v) if "=?" in v else v for k, v in plain.items()}


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _join_sections(pieces: dict[int, tuple[str, bool]]) -> str:
    """RFC 2231: ``name*0*=utf-8''caf%C3%A9; name*1=.pdf``, the charset on the first."""
    charset = "us-ascii"
    data = bytearray()
    for number in sorted(pieces):
        text, encoded = pieces[number]
        if encoded and number == min(pieces) and text.count("'") >= 2:
            charset, _language, text = text.split("'", 2)
            charset = charset or "us-ascii"
        if encoded:
            data += urllib.parse.unquote_to_bytes(text)
        else:
            data += text.encode("utf-8", "surrogateescape")
    try:
        return data.decode(charset or "us-ascii")
    except (LookupError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


def content_type(value: str | None, default: str = "text/plain") -> tuple[str, dict[str, str]]:
    """The lower-cased ``type/subtype`` and the parameters; ``default`` when there is no
    Content-Type or its type cannot be read (RFC 2045 §5.2, as the standard library)."""
    if value is None:
        return default, {}
    first, params = parse_params(value)
    kind = first.lower()
    if not _TOKEN_TYPE.fullmatch(kind):
        return "text/plain", params
    return kind, params


def disposition(value: str | None) -> tuple[str | None, dict[str, str]]:
    if value is None:
        return None, {}
    first, params = parse_params(value)
    return (first.lower() or None), params


def file_name(raw: str | None) -> str | None:
    """A parameter value as a file name: its last path component, stripped; None if
    nothing is left. A Windows path (``C:\\TEMP\\photo.png``) is cut at its
    backslashes, which its writer never meant as escapes."""
    if raw is None:
        return None
    name = re.split(r"[\\/]", raw)[-1].strip()
    return name or None


def raw_file_name(value: str | None, *names: str) -> str | None:
    """The first of ``names`` among the parameters of ``value``, as a file name.

    A quoted value's backslashes are taken as path separators when they do not escape
    a quote or a backslash: Outlook writes ``filename="C:\\TEMP\\photo.png"``."""
    if value is None:
        return None
    _first, raw = split_params(value)
    _f, params = parse_params(value)
    for wanted in names:
        for name, text, quoted in raw:
            if name == wanted and quoted and re.search(r"\\[^\\\"]", text):
                return file_name(decode_words(text) if "=?" in text else text)
        if wanted in params:
            return file_name(params[wanted])
    return None


def decode_words(text: str) -> str:
    """Text with its RFC 2047 encoded words decoded in place (white space between two
    encoded words dropped, as the RFC says; a word glued to other text, as some mailers
    write file names, decoded where it stands); a word that does not decode stays as
    written."""
    if "=?" not in text:
        return text
    out: list[str] = []
    position = 0
    after_word = False
    for match in _ENCODED_WORD.finditer(text):
        between = text[position:match.start()]
        decoded = _one_word(match)
        if not (after_word and decoded is not None and not between.strip()):
            out.append(between)
        out.append(match.group() if decoded is None else decoded)
        after_word = decoded is not None
        position = match.end()
    out.append(text[position:])
    return "".join(out)


def _one_word(match: re.Match[str]) -> str | None:
    charset, encoding, payload = match.group()[2:-2].split("?")
    charset = charset.split("*")[0] or "us-ascii"  # an RFC 2231 language suffix
    try:
        if encoding.lower() == "b":
            data = base64.b64decode(payload + "=" * (-len(payload) % 4))
        else:
            data = binascii.a2b_qp(payload.replace("_", " ").encode("ascii"))
    except (ValueError, binascii.Error):
        return None
    try:
        return data.decode(charset, errors="replace")
    except LookupError:  # a charset nobody knows: read it as UTF-8
        return data.decode("utf-8", errors="replace")
