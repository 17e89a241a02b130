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
        "reply_heading": "Répondre de façon sécurisée",
        "reply_open": "Répondre de façon sécurisée",
        "reply_text": "Votre message",
        "reply_files": "Documents (facultatif)",
        "reply_send": "Envoyer la réponse",
        "manage_title": "Votre lien sécurisé",
        "manage_heading": "Votre lien sécurisé",
        "manage_noscript": "Cette page a besoin de JavaScript.",
        "manage_loading": "Ouverture…",
        "manage_to": "Destinataires",
        "manage_sent": "Envoyé le",
        "manage_state": "État",
        "manage_opened": "Ouvert",
        "manage_expires": "Valable jusqu'au",
        "manage_downloads": "Téléchargements",
        "manage_revoke_heading": "Révoquer le lien",
        "manage_revoke_help": "Le destinataire ne pourra plus ouvrir le message ni "
                              "télécharger ses documents, dès maintenant. Cela ne peut pas "
                              "être annulé.",
        "manage_revoke": "Révoquer le lien…",
        "manage_confirm_text": "Révoquer ce lien maintenant ? Le destinataire verra que le "
                               "lien n'est plus valable.",
        "manage_confirm": "Oui, révoquer",
        "manage_cancel": "Annuler",
        "manage_extend_heading": "Prolonger",
        "manage_extend_days": "Jours de plus",
        "manage_extend_downloads": "Téléchargements de plus, par document",
        "manage_extend": "Prolonger",
        "manage_privacy": "Cette page est pour vous seul : ne transmettez pas son lien.",
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
        "reply_heading": "Reply securely",
        "reply_open": "Reply securely",
        "reply_text": "Your message",
        "reply_files": "Documents (optional)",
        "reply_send": "Send the reply",
        "manage_title": "Your secure link",
        "manage_heading": "Your secure link",
        "manage_noscript": "This page needs JavaScript.",
        "manage_loading": "Opening…",
        "manage_to": "Recipients",
        "manage_sent": "Sent on",
        "manage_state": "State",
        "manage_opened": "Opened",
        "manage_expires": "Valid until",
        "manage_downloads": "Downloads",
        "manage_revoke_heading": "Revoke the link",
        "manage_revoke_help": "The recipient will no longer be able to open the message or "
                              "download its documents, from now on. This cannot be undone.",
        "manage_revoke": "Revoke the link…",
        "manage_confirm_text": "Revoke this link now? The recipient will see that the link "
                               "is no longer valid.",
        "manage_confirm": "Yes, revoke",
        "manage_cancel": "Cancel",
        "manage_extend_heading": "Extend",
        "manage_extend_days": "More days",
        "manage_extend_downloads": "More downloads, per document",
        "manage_extend": "Extend",
        "manage_privacy": "This page is for you only: do not pass its link on.",
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
              footer: str, *, script: bool | str) -> str:
    texts = TEXTS[language]
    e = escape
    name = script if isinstance(script, str) else "portal.js"
    head_script = (f'\n<script type="module" src="/static/{name}"></script>' if script
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

<section id="reply" class="card" aria-labelledby="reply-heading" hidden>
<h2 id="reply-heading">{t["reply_heading"]}</h2>
<p id="reply-to"></p>
<button id="reply-open" type="button">{t["reply_open"]}</button>
<form id="reply-form" novalidate hidden>
<label for="reply-text">{t["reply_text"]}</label>
<textarea id="reply-text" name="text" rows="6"></textarea>
<label for="reply-files">{t["reply_files"]}</label>
<input id="reply-files" name="files" type="file" multiple>
<p id="reply-limits" class="limits"></p>
<p id="reply-error" class="error" role="alert"></p>
<button id="reply-send" type="submit">{t["reply_send"]}</button>
</form>
<p id="reply-status" class="status" role="status" aria-live="polite"></p>
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


def manage_page(language: Language, practice: Practice) -> str:
    """The sender's page for one link; manage.js reads the sender's secret from the
    address, asks the server for the link's state and fills the page in."""
    t = {key: escape(value) for key, value in TEXTS[language].items()}
    main = f"""<h1 id="heading" tabindex="-1">{t["manage_heading"]}</h1>
<noscript><p class="problem">{t["manage_noscript"]}</p></noscript>
<p id="status" class="status" role="status" aria-live="polite">{t["manage_loading"]}</p>

<section id="link" class="card" aria-labelledby="heading" hidden>
<dl class="meta">
<dt>{t["manage_to"]}</dt><dd id="recipients"></dd>
<dt>{t["manage_sent"]}</dt><dd id="created"></dd>
<dt>{t["manage_state"]}</dt><dd id="state"></dd>
<dt>{t["manage_opened"]}</dt><dd id="opened"></dd>
<dt>{t["manage_expires"]}</dt><dd id="expires"></dd>
<dt>{t["manage_downloads"]}</dt><dd id="downloads"></dd>
</dl>
<p id="notices" class="limits"></p>
</section>

<section id="extend-step" class="card" aria-labelledby="extend-heading" hidden>
<h2 id="extend-heading">{t["manage_extend_heading"]}</h2>
<form id="extend-form" novalidate>
<label for="days">{t["manage_extend_days"]}</label>
<input id="days" name="days" type="number" inputmode="numeric" min="0" value="0">
<label for="more-downloads">{t["manage_extend_downloads"]}</label>
<input id="more-downloads" name="downloads" type="number" inputmode="numeric" min="0"
 value="0">
<p id="extend-help" class="limits"></p>
<p id="extend-error" class="error" role="alert"></p>
<button id="extend-submit" type="submit">{t["manage_extend"]}</button>
</form>
</section>

<section id="revoke-step" class="card" aria-labelledby="revoke-heading" hidden>
<h2 id="revoke-heading">{t["manage_revoke_heading"]}</h2>
<p>{t["manage_revoke_help"]}</p>
<button id="revoke" type="button" class="danger">{t["manage_revoke"]}</button>
<div id="confirm" hidden>
<p id="confirm-text" role="alert">{t["manage_confirm_text"]}</p>
<button id="confirm-revoke" type="button" class="danger">{t["manage_confirm"]}</button>
<button id="cancel-revoke" type="button" class="secondary">{t["manage_cancel"]}</button>
</div>
</section>

<section id="problem" class="card problem" aria-labelledby="problem-heading" hidden>
<h2 id="problem-heading" tabindex="-1">{t["unavailable_heading"]}</h2>
<p id="problem-text"></p>
</section>"""
    footer = f'<p>{t["manage_privacy"]}</p>'
    return _document(language, TEXTS[language]["manage_title"], practice, main, footer,
                     script="manage.js")
