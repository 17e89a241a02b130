"""The portal's HTML: the link page (a shell the script fills in) and the page for a link
that cannot be opened. French by default, English when the browser prefers it.

Everything that comes from the configuration is escaped; nothing from a message ever
reaches the server, so these pages never hold health data.
"""

from __future__ import annotations

from html import escape as _escape
from typing import Literal

from gateway.config import Practice

Language = Literal["fr", "en"]


def escape(text: str) -> str:
    """For text between tags (never attributes): quotes need no escaping there."""
    return _escape(text, quote=False)

LANGUAGES: tuple[Language, ...] = ("fr", "en")

TEXTS: dict[Language, dict[str, str]] = {
    "fr": {
        "title": "Message sécurisé",
        "tagline": "Espace sécurisé",
        "heading": "Message sécurisé",
        "noscript": "Cette page a besoin de JavaScript : votre message est déchiffré dans "
                    "votre navigateur, jamais sur le serveur. Activez JavaScript, ou ouvrez "
                    "le lien dans un autre navigateur.",
        "loading": "Ouverture du message…",
        "code_heading": "Code d'accès",
        "code_help": "Le cabinet vous a donné un code d'accès, par téléphone ou de vive "
                     "voix. Saisissez-le pour ouvrir le message.",
        "code_label": "Code d'accès",
        "code_submit": "Ouvrir le message",
        "from": "De",
        "date": "Date",
        "message": "Message",
        "documents": "Documents",
        "problem_heading": "Ce message ne peut pas être ouvert",
        "privacy": "Votre message est déchiffré dans votre navigateur : ni le serveur ni "
                   "personne d'autre que vous ne peut le lire en chemin.",
        "unavailable_title": "Lien non valable",
        "unavailable_heading": "Ce lien n'est plus valable",
        "unavailable_text": "Il a peut-être expiré, été utilisé autant de fois que prévu, "
                            "ou été désactivé.",
        "contact": "Pour recevoir à nouveau ce message, contactez {practice}.",
        "contact_with": "Pour recevoir à nouveau ce message, contactez {practice} au "
                        "{contact}.",
        "help": "En cas de difficulté, contactez {practice}.",
        "help_with": "En cas de difficulté, contactez {practice} au {contact}.",
    },
    "en": {
        "title": "Secure message",
        "tagline": "Secure space",
        "heading": "Secure message",
        "noscript": "This page needs JavaScript: your message is decrypted in your "
                    "browser, never on the server. Turn JavaScript on, or open the link in "
                    "another browser.",
        "loading": "Opening the message…",
        "code_heading": "Access code",
        "code_help": "The practice gave you an access code, by phone or in person. Enter "
                     "it to open the message.",
        "code_label": "Access code",
        "code_submit": "Open the message",
        "from": "From",
        "date": "Date",
        "message": "Message",
        "documents": "Documents",
        "problem_heading": "This message cannot be opened",
        "privacy": "Your message is decrypted in your browser: neither the server nor "
                   "anyone else can read it on the way.",
        "unavailable_title": "Link no longer valid",
        "unavailable_heading": "This link is no longer valid",
        "unavailable_text": "It may have expired, been used as many times as allowed, or "
                            "been switched off.",
        "contact": "To receive this message again, please contact {practice}.",
        "contact_with": "To receive this message again, please contact {practice} on "
                        "{contact}.",
        "help": "If anything goes wrong, please contact {practice}.",
        "help_with": "If anything goes wrong, please contact {practice} on {contact}.",
    },
}


def negotiate(accept_language: str | None) -> Language:
    """The language of the page: the one of ours the browser weighs highest; French on a
    tie or when it names neither."""
    best: Language = "fr"
    best_q = 0.0
    for entry in (accept_language or "").split(","):
        tag, _, params = entry.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = ("en" if primary == "en" else "fr"), q
    return best


def practice_sentence(practice: Practice, language: Language, kind: str) -> str:
    """``kind`` is "contact" (a link that no longer works) or "help" (anything else)."""
    texts = TEXTS[language]
    key = f"{kind}_with" if practice.contact else kind
    return texts[key].format(practice=practice.name, contact=practice.contact)


def _document(language: Language, title: str, practice: Practice, main: str,
              footer: str, *, script: bool) -> str:
    texts = TEXTS[language]
    e = escape
    head_script = ('\n<script type="module" src="/static/portal.js"></script>' if script
                   else "")
    footer = f'\n<footer class="bottom">\n{footer}\n</footer>' if footer else ""
    return f"""<!doctype html>
<html lang="{language}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
<title>{e(title)} – {e(practice.name)}</title>
<link rel="stylesheet" href="/static/portal.css">{head_script}
</head>
<body>
<header class="top">
<p class="practice">{e(practice.name)}</p>
<p class="tagline">{e(texts["tagline"])}</p>
</header>
<main id="main">
{main}
</main>{footer}
</body>
</html>
"""


def link_page(language: Language, practice: Practice) -> str:
    """The page of a usable link; portal.js reads the key from the address and fills it."""
    t = {key: escape(value) for key, value in TEXTS[language].items()}
    main = f"""<h1 id="heading" tabindex="-1">{t["heading"]}</h1>
<noscript><p class="problem">{t["noscript"]}</p></noscript>
<p id="status" class="status" role="status" aria-live="polite">{t["loading"]}</p>

<section id="code-step" class="card" aria-labelledby="code-heading" hidden>
<h2 id="code-heading">{t["code_heading"]}</h2>
<p id="code-help">{t["code_help"]}</p>
<form id="code-form" novalidate>
<label for="code">{t["code_label"]}</label>
<input id="code" name="code" type="text" required maxlength="40" autocomplete="one-time-code"
 autocapitalize="characters" autocorrect="off" spellcheck="false"
 aria-describedby="code-help code-error">
<p id="code-error" class="error" role="alert"></p>
<button id="code-submit" type="submit">{t["code_submit"]}</button>
</form>
</section>

<section id="message" class="card" aria-labelledby="subject" hidden>
<h2 id="subject" tabindex="-1"></h2>
<dl class="meta">
<dt>{t["from"]}</dt><dd id="sender"></dd>
<dt id="date-label">{t["date"]}</dt><dd id="date"></dd>
</dl>
<h3>{t["message"]}</h3>
<div id="body" class="body"></div>
<h3 id="documents-heading">{t["documents"]}</h3>
<ul id="documents" class="documents" aria-labelledby="documents-heading"></ul>
<p id="limits" class="limits"></p>
</section>

<section id="problem" class="card problem" aria-labelledby="problem-heading" hidden>
<h2 id="problem-heading" tabindex="-1">{t["problem_heading"]}</h2>
<p id="problem-text"></p>
</section>"""
    footer = (f'<p id="contact">{escape(practice_sentence(practice, language, "help"))}</p>\n'
              f'<p>{t["privacy"]}</p>')
    return _document(language, TEXTS[language]["title"], practice, main, footer, script=True)


def unavailable_page(language: Language, practice: Practice) -> str:
    """The one page for every link that cannot be opened, whatever the reason."""
    t = {key: escape(value) for key, value in TEXTS[language].items()}
    main = f"""<section class="card problem" aria-labelledby="heading">
<h1 id="heading">{t["unavailable_heading"]}</h1>
<p>{t["unavailable_text"]}</p>
<p class="contact">{escape(practice_sentence(practice, language, "contact"))}</p>
</section>"""
    return _document(language, TEXTS[language]["unavailable_title"], practice, main, "",
                     script=False)
