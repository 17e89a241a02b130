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

# The receipt: how the recipient gets in, what the sender will be told, the sender's link.
CODE_PARAGRAPH = {
    "generated": {
        "fr": "Code d'accès à lui donner par téléphone ou de vive voix (jamais par e-mail) :"
              "\n\n    {code}\n",
        "en": "Access code to give them by phone or in person (never by email):"
              "\n\n    {code}\n",
    },
    "sender-tag": {
        "fr": "Le code d'accès est celui que vous avez écrit dans l'objet : donnez-le par "
              "téléphone ou de vive voix (jamais par e-mail).\n",
        "en": "The access code is the one you wrote in the subject: give it by phone or in "
              "person (never by email).\n",
    },
    "none": {
        "fr": "Ce message n'a pas de code d'accès : le lien suffit pour l'ouvrir.\n",
        "en": "This message has no access code: the link alone opens it.\n",
    },
}
NOTICE_WHEN = {
    "opened": {"fr": "quand le message sera ouvert pour la première fois",
               "en": "when the message is first opened"},
    "downloaded": {"fr": "à chaque téléchargement d'un document",
                   "en": "each time a document is downloaded"},
    "expired": {"fr": "si le lien expire sans que le message ait été ouvert",
                "en": "if the link expires without the message being opened"},
}
NOTICES_SENTENCE = {
    "fr": ("Vous recevrez un avis par e-mail {events}.",
           "Vous ne recevrez pas d'avis sur ce message."),
    "en": ("You will get a notice by email {events}.",
           "You will get no notice about this message."),
}
MANAGE_PARAGRAPH = {
    "fr": "Pour révoquer ce lien, le prolonger ou permettre plus de téléchargements (pour "
          "vous seul, ne le transmettez pas) :\n{url}\n",
    "en": "To revoke this link, extend it or allow more downloads (for you only, do not "
          "pass it on):\n{url}\n",
}

# A notice to the sender about the link: what happened.
EVENT_TITLE = {
    "opened": {"fr": "Message ouvert", "en": "Message opened"},
    "downloaded": {"fr": "Document téléchargé", "en": "Document downloaded"},
    "expired": {"fr": "Lien expiré sans ouverture", "en": "Link expired unopened"},
}
EVENT_SENTENCE = {
    "opened": {"fr": "Le destinataire a ouvert votre message sécurisé pour la première fois.",
               "en": "The recipient opened your secure message for the first time."},
    "downloaded": {"fr": "Le document {n} sur {total} de votre message sécurisé a été "
                         "téléchargé ({count} fois sur {limit} possibles).",
                   "en": "Document {n} of {total} of your secure message was downloaded "
                         "({count} of {limit} times allowed)."},
    "expired": {"fr": "Le lien de votre message sécurisé a expiré sans que le message ait "
                      "été ouvert : le destinataire ne l'a pas lu. Renvoyez-le si besoin.",
                "en": "The link to your secure message expired without the message being "
                      "opened: the recipient did not read it. Send it again if need be."},
}
REPLY_CODE_SENTENCE = {
    "fr": "La réponse s'ouvre avec le code d'accès de votre message.",
    "en": "The reply opens with the access code of your message.",
}

FILES = ("subject.txt", "notice.txt", "notice.html", "receipt-subject.txt", "receipt.txt")
OPTIONAL_FILES = ("event-subject.txt", "event.txt", "reply-subject.txt", "reply.txt")
"""Files a practice's own template folder may lack: Pli's are used instead."""


def notices_sentence(events: tuple[str, ...], language: str) -> str:
    some, none = NOTICES_SENTENCE[language]
    if not events:
        return none
    parts = [NOTICE_WHEN[e][language] for e in events]
    joiner = {"fr": " et ", "en": " and "}[language]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + joiner + parts[-1]
    return some.format(events=listed)


def format_date(timestamp: float, language: str) -> str:
    moment = time.localtime(timestamp)
    month = _MONTHS.get(language, _MONTHS["en"])[moment.tm_mon - 1]
    if language == "fr":
        return (f"{moment.tm_mday} {month} {moment.tm_year} "
                f"à {moment.tm_hour:02d} h {moment.tm_min:02d}")
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

    def mentions(self, name: str, variable: str) -> bool:
        """Whether the text ``name`` uses ``$variable`` (a practice's older copy may not)."""
        text = self.texts[name]
        return f"${variable}" in text or f"${{{variable}}}" in text


def load_templates(folders: list[Path], language: str, name: str) -> TemplateSet:
    """The first folder that has ``<language>/<name>/`` wins (the practice's, then Pli's);
    an optional file it lacks comes from the next folder that has it, under the same
    name or ``default``."""
    for index, base in enumerate(folders):
        folder = base / language / name
        if folder.is_dir():
            try:
                texts = {f: (folder / f).read_text(encoding="utf-8") for f in FILES}
            except OSError as exc:
                raise ConfigError(f"{folder}: template file missing or unreadable: "
                                  f"{getattr(exc, 'filename', exc)}") from None
            for optional in OPTIONAL_FILES:
                text = _first(optional, [base / language / name] + [
                    other / language / n for other in folders[index:] for n in (name, "default")])
                if text is None:
                    raise ConfigError(f"{folder}: template file {optional} missing, here and "
                                      "in Pli's own templates")
                texts[optional] = text
            return TemplateSet(language, texts)
    raise ConfigError(f"no template {language}/{name} in {', '.join(map(str, folders))}")


def _first(file: str, folders: list[Path]) -> str | None:
    for folder in folders:
        try:
            return (folder / file).read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"{folder / file}: unreadable: {exc.strerror}") from None
    return None
