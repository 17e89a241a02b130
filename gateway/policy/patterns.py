"""Content patterns: keywords, French NIR, dates of birth, subject tags.

Everything here works on text that is health data: functions answer yes/no or return what
the policy needs (a tag name, an access code for the vault), never a copy to be logged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

# --- Text folding ------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower-case, accents removed, typographic apostrophes and spaces made plain."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold().replace("\u2019", "'").replace("\u00a0", " ")


def keyword_regex(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex finding any keyword as whole words in folded text (spaces are flexible)."""
    parts = []
    for keyword in keywords:
        words = fold(keyword).split()
        if words:
            parts.append(r"\s+".join(re.escape(w) for w in words))
    if not parts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)")


# --- NIR (numéro d'inscription au répertoire, "numéro de sécurité sociale") ----------------

# Sex digit, then 14 more characters, each possibly preceded by one space (groups are often
# written "1 84 03 75 123 456 78"). The strict shape is checked after the spaces are removed.
_NIR_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])[1-478](?:[ \u00a0.]?[0-9AaBb]){14}(?![0-9A-Za-z])")
_NIR_SHAPE = re.compile(r"^[1-478]\d{4}(?:\d{2}|2[AB])\d{6}\d{2}$")


def nir_key_is_valid(nir: str) -> bool:
    """True when ``nir`` (15 characters, spaces allowed) has a valid check key.

    The key is 97 - (the 13-character number mod 97); for Corsica the department 2A counts
    as 19 and 2B as 18 in that computation.
    """
    compact = re.sub(r"[ \u00a0.]", "", nir).upper()
    if not _NIR_SHAPE.match(compact):
        return False
    corsica = {"2A": "19", "2B": "18"}
    department = compact[5:7]
    number = compact[:5] + corsica.get(department, department) + compact[7:13]
    return 97 - int(number) % 97 == int(compact[13:])


def contains_nir(text: str) -> bool:
    """Does ``text`` hold a French NIR whose check key is valid?"""
    return any(nir_key_is_valid(m.group()) for m in _NIR_CANDIDATE.finditer(text))


# --- Dates of birth ----------------------------------------------------------------------

_MONTHS = {
    "janvier": 1, "janv": 1, "jan": 1, "january": 1,
    "fevrier": 2, "fevr": 2, "fev": 2, "feb": 2, "february": 2,
    "mars": 3, "mar": 3, "march": 3,
    "avril": 4, "avr": 4, "apr": 4, "april": 4,
    "mai": 5, "may": 5,
    "juin": 6, "june": 6, "jun": 6,
    "juillet": 7, "juil": 7, "july": 7, "jul": 7,
    "aout": 8, "aug": 8, "august": 8,
    "septembre": 9, "sept": 9, "sep": 9, "september": 9,
    "octobre": 10, "oct": 10, "october": 10,
    "novembre": 11, "nov": 11, "november": 11,
    "decembre": 12, "dec": 12, "december": 12,
}  # fmt: skip

# Phrases that announce a date of birth, in folded text ("née le" → "nee le").
_DOB_LEAD = (
    r"(?:nee?s?\s+le|nee?s?\s+en\s+date\s+du|date\s+de\s+naissance|d\.?d\.?n\.?"
    r"|dob|d\.o\.b\.|date\s+of\s+birth|birth\s*date|born(?:\s+on)?)"
)
_MONTH_NAMES = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DOB = re.compile(
    r"(?<!\w)" + _DOB_LEAD + r"\s*[:\-]?\s*(?:le\s+|on\s+)?"
    r"(?:(?P<d1>\d{1,2})\s*[/.\-]\s*(?P<m1>\d{1,2})\s*[/.\-]\s*(?P<y1>\d{4}|\d{2})"
    r"|(?P<y2>\d{4})\s*-\s*(?P<m2>\d{1,2})\s*-\s*(?P<d2>\d{1,2})"
    r"|(?P<d3>\d{1,2})(?:er)?\s+(?P<mn3>" + _MONTH_NAMES + r")\.?\s+(?P<y3>\d{4})"
    r"|(?P<mn4>" + _MONTH_NAMES + r")\.?\s+(?P<d4>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y4>\d{4}))"
    r"(?!\d)"
)


def contains_date_of_birth(text: str) -> bool:
    """Does ``text`` state a date of birth ("né le 12/03/1984", "DOB 1984-03-12", …)?"""
    for match in _DOB.finditer(fold(text)):
        if _real_date(match):
            return True
    return False


def _real_date(match: re.Match[str]) -> bool:
    g = match.groupdict()
    try:
        if g["d1"]:
            day, month, year = int(g["d1"]), int(g["m1"]), int(g["y1"])
        elif g["y2"]:
            day, month, year = int(g["d2"]), int(g["m2"]), int(g["y2"])
        elif g["d3"]:
            day, month, year = int(g["d3"]), _MONTHS[g["mn3"]], int(g["y3"])
        else:
            day, month, year = int(g["d4"]), _MONTHS[g["mn4"]], int(g["y4"])
        if year < 100:
            year += 1900
        date(year, month, day)
    except (ValueError, KeyError, TypeError):
        return False
    return 1880 <= year <= 2200


# --- Subject tags ------------------------------------------------------------------------

# A tag's name is a word (letters, accented ones too, then letters, digits, "_" or "-").
TAG_NAME = re.compile(r"^[^\W\d_][\w-]*$")
_TAG = re.compile(r"\[\s*([^\W\d_][\w-]*)\s*(?::\s*([^\]\[]*?))?\s*\]")
_ACCESS_CODE = re.compile(r"^[A-Za-z0-9]{4,12}$")
_DAYS = re.compile(r"^(\d{1,4})\s*(?:j|jours?|d|days?)?$", re.IGNORECASE)
_COUNT = re.compile(r"^(\d{1,5})$")


@dataclass(frozen=True)
class TagNames:
    """The names of the tags a sender writes in the subject for one message (the
    policy's ``[tags]``): the sender's notices on or off, the link's expiry in days and
    each document's download limit. Compared folded (case and accents do not count)."""

    notify: str = "avis"
    no_notify: str = "sans-avis"
    expiry: str = "expire"
    downloads: str = "telechargements"

    def all(self) -> tuple[str, ...]:
        return (self.notify, self.no_notify, self.expiry, self.downloads)


class BadTag(ValueError):
    """A tag whose value cannot be read (``[expire:bientôt]``); ``name`` is the tag's."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def notices_asked(subject: str, names: TagNames = TagNames()) -> bool | None:
    """True for ``[avis]``, False for ``[sans-avis]`` (which wins if both are there),
    None when the subject says neither."""
    tags = subject_tags(subject)
    if fold(names.no_notify) in tags:
        return False
    if fold(names.notify) in tags:
        return True
    return None


def days_asked(subject: str, names: TagNames = TagNames()) -> int | None:
    """The days of ``[expire:3j]`` (``3``, ``3j``, ``3 jours``, ``3d``), None without the
    tag; raises BadTag for a value that is not a number of days of at least 1."""
    value = subject_tags(subject).get(fold(names.expiry))
    if value is None:
        return None
    found = _DAYS.match(value.strip())
    if found is None or int(found.group(1)) < 1:
        raise BadTag(names.expiry)
    return int(found.group(1))


def downloads_asked(subject: str, names: TagNames = TagNames()) -> int | None:
    """The number of ``[telechargements:1]``, None without the tag; raises BadTag for a
    value that is not a whole number of at least 1."""
    value = subject_tags(subject).get(fold(names.downloads))
    if value is None:
        return None
    found = _COUNT.match(value.strip())
    if found is None or int(found.group(1)) < 1:
        raise BadTag(names.downloads)
    return int(found.group(1))


def subject_tags(subject: str) -> dict[str, str]:
    """Tags in a subject, by folded name: ``[clair]`` → {"clair": ""}, ``[code:1234]`` →
    {"code": "1234"}. The first occurrence of a name wins."""
    tags: dict[str, str] = {}
    for match in _TAG.finditer(subject):
        tags.setdefault(fold(match.group(1)), match.group(2) or "")
    return tags


def access_code_tag(subject: str) -> str | None:
    """The access code the sender gave with ``[code:NNNN]`` (4–12 letters or digits)."""
    value = subject_tags(subject).get("code")
    return value if value and _ACCESS_CODE.match(value) else None


def remove_subject_tags(subject: str, names: Iterable[str] = ("code",)) -> str:
    """The subject without the tags named (``Policy.tag_names``), so that ``[code:…]``,
    ``[clair]``, ``[avis]`` or ``[expire:3j]`` never reach a recipient; other bracketed
    words stay."""
    wanted = {fold(n) for n in names}

    def drop(match: re.Match[str]) -> str:
        return " " if fold(match.group(1)) in wanted else match.group()

    return " ".join(_TAG.sub(drop, subject).split())
