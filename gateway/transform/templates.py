"""The texts of notices and receipts, from ``templates/<language>/<name>/`` files."""

from __future__ import annotations

import html
import string
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

_MONTHS = {
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
           "septembre", "octobre", "novembre", "décembre"],
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
}

CODE_SENTENCE = {
    "fr": "Un code d'accès vous sera demandé. Le cabinet vous le donne par téléphone "
          "ou de vive voix, jamais par e-mail.",
    "en": "You will be asked for an access code. The practice gives it to you by phone "
          "or in person, never by email.",
}
CONTACT_SENTENCE = {"fr": " au {contact}", "en": " on {contact}"}

FILES = ("subject.txt", "notice.txt", "notice.html", "receipt-subject.txt", "receipt.txt")


def format_date(timestamp: float, language: str) -> str:
    moment = time.localtime(timestamp)
    month = _MONTHS.get(language, _MONTHS["en"])[moment.tm_mon - 1]
    if language == "fr":
        return f"{moment.tm_mday} {month} {moment.tm_year} à {moment.tm_hour:02d} h {moment.tm_min:02d}"
    return f"{month} {moment.tm_mday}, {moment.tm_year} at {moment.tm_hour:02d}:{moment.tm_min:02d}"


@dataclass(frozen=True)
class TemplateSet:
    language: str
    texts: dict[str, str]

    def render(self, name: str, values: dict[str, str]) -> str:
        text = self.texts[name]
        if name.endswith(".html"):
            values = {k: html.escape(v) for k, v in values.items()}
        return string.Template(text).safe_substitute(values)

    def line(self, name: str, values: dict[str, str]) -> str:
        """A one-line text (a subject): never more than one line, whatever the values."""
        return " ".join(self.render(name, values).split())


def load_templates(folders: list[Path], language: str, name: str) -> TemplateSet:
    """The first folder that has ``<language>/<name>/`` wins (the practice's, then Pli's)."""
    for base in folders:
        folder = base / language / name
        if folder.is_dir():
            try:
                texts = {f: (folder / f).read_text(encoding="utf-8") for f in FILES}
            except OSError as exc:
                raise ConfigError(f"{folder}: template file missing or unreadable: "
                                  f"{getattr(exc, 'filename', exc)}") from None
            return TemplateSet(language, texts)
    raise ConfigError(f"no template {language}/{name} in {', '.join(map(str, folders))}")
