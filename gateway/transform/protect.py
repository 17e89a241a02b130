"""Protect: the original goes into the vault, the recipients get a notice with a link.

One link per protected recipient group, holding the original body and every attachment,
each file streamed from the message file into the vault. The access code comes from the
sender's ``[code:NNNN]`` tag, or is made here and sent to the sender alone in a receipt,
or there is none, as the policy decided: the policy's decision is final (a rule that
needs a tag has already refused a message without one), nothing is decided again here.
The same goes for the notices the sender asked for, the expiry and the downloads.

The receipt goes to the sender alone whenever there is something to tell only them:
the generated code, and the link to the sender's own page for this link (revoke,
extend, more downloads), whose secret is never in the recipients' notice. It says
which notices will come. A practice's receipt template from before that page (no
``$manage_link``) keeps the old way: a receipt for a generated code only.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings
from gateway.message.model import Message
from gateway.policy import access_code_tag, remove_subject_tags
from gateway.transform import compose
from gateway.transform.extract import Extracted, File
from gateway.transform.templates import (
    CODE_PARAGRAPH,
    CODE_SENTENCE,
    CONTACT_SENTENCE,
    MANAGE_PARAGRAPH,
    format_date,
    load_templates,
    notices_sentence,
)
from gateway.types import Outgoing, ProtectSettings
from gateway.vault import LinkOptions, Manifest, SealFile, Vault

GENERATED_CODE_DIGITS = 6


@dataclass(frozen=True)
class Protected:
    outgoing: tuple[Outgoing, ...]
    link_id: str
    access_code: str  # "none", "sender-tag" or "generated": how, never the code itself


def generate_code() -> str:
    return f"{secrets.randbelow(10**GENERATED_CODE_DIGITS):0{GENERATED_CODE_DIGITS}d}"


class Protector:
    def __init__(self, vault: Vault, settings: Settings, template_dirs: Sequence[Path],
                 tag_names: Callable[[], frozenset[str]],
                 clock: Callable[[], float] = time.time) -> None:
        self.vault = vault
        self.settings = settings
        self.template_dirs = list(template_dirs)
        self.tag_names = tag_names
        self.clock = clock

    def protect(self, message: Message, parts: Extracted, mail_from: str,
                recipients: tuple[str, ...], how: ProtectSettings, *,
                tag_names: frozenset[str] | None = None) -> Protected:
        """Blocking (the vault writes and fsyncs): run it in a worker thread.

        ``parts`` is ``message`` taken apart (``extract``), once for every group."""
        code, mode = self._access_code(parts, how)
        templates = load_templates(self.template_dirs, how.language, how.template)
        subject = remove_subject_tags(parts.subject,
                                      self.tag_names() if tag_names is None else tag_names)
        now = self.clock()
        expires = now + how.expiry_days * 86400
        manage = how.manage_link and templates.mentions("receipt.txt", "manage_link")
        sealed = self.vault.seal(
            _manifest(parts, subject),
            [SealFile(f.name, f.declared_type, f.true_type, f.chunks()) for f in parts.files],
            sender=mail_from, recipient=", ".join(recipients), expires_at=expires,
            download_limit=how.download_limit, access_code=code,
            options=link_options(how, now), manage=manage,
        )
        try:
            practice = self.settings.practice
            contact = practice.contact
            values = {
                "practice": practice.name,
                "link": sealed.fragment_url(self.settings.portal.url),
                "expiry": format_date(expires, how.language),
                "downloads": str(how.download_limit),
                "code_sentence": CODE_SENTENCE[how.language] if code else "",
                "contact_sentence":
                    CONTACT_SENTENCE[how.language].format(contact=contact) if contact else "",
            }
            new_subject = (templates.line("subject.txt", values) if how.subject == "neutral"
                           else subject)
            notice = compose.notice(
                message.header, subject=new_subject,
                text=templates.render("notice.txt", values),
                html=templates.render("notice.html", values),
                hostname=self.settings.hostname, kept=_kept(parts, how),
            )
            outgoing = [Outgoing(mail_from, recipients, notice)]
            if (mode == "generated" and code) or manage:
                language = how.language
                receipt_values = {
                    **values, "code": code or "", "link_id": sealed.id,
                    "recipients": ", ".join(recipients),
                    "code_paragraph": CODE_PARAGRAPH[mode if code or mode == "none"
                                                     else "none"][language].format(code=code),
                    "notices_sentence": notices_sentence(how.notify, language),
                    "manage_link": MANAGE_PARAGRAPH[language].format(
                        url=sealed.manage_url(self.settings.portal.url)) if manage else "",
                }
                outgoing.append(Outgoing(mail_from, (mail_from,), (compose.receipt(
                    sender=mail_from,
                    subject=templates.line("receipt-subject.txt", receipt_values),
                    text=templates.render("receipt.txt", receipt_values),
                    hostname=self.settings.hostname,
                ),)))
        except BaseException:
            self.vault.discard(sealed.id)
            raise
        return Protected(tuple(outgoing), sealed.id, mode)

    def _access_code(self, parts: Extracted, how: ProtectSettings) -> tuple[str | None, str]:
        """The code the decision asks for: the sender's tag, one made now, or none."""
        if how.access_code == "sender-tag":
            tagged = access_code_tag(parts.subject)
            if tagged is None:
                raise ValueError("a sender-tag decision for a message without a code tag")
            return tagged, "sender-tag"
        if how.access_code == "generated":
            return generate_code(), "generated"
        if how.access_code == "none":
            return None, "none"
        raise ValueError(f"an access code mode the policy did not settle: {how.access_code}")


def link_options(how: ProtectSettings, now: float) -> LinkOptions:
    """What the vault keeps of the decision for the link's life after sending."""
    return LinkOptions(
        language=how.language, template=how.template, notify=how.notify,
        max_expires=now + how.max_expiry_days * 86400,
        max_download_limit=how.max_download_limit,
        reply_max_files=how.reply_max_files, reply_max_bytes=how.reply_max_bytes)


def _manifest(parts: Extracted, subject: str) -> Manifest:
    return Manifest(
        sender=parts.sender,
        subject=subject,
        date=parts.date,
        text=parts.text or None,
        html=parts.html or None,
    )  # the vault lists the files itself as it seals them


def _kept(parts: Extracted, how: ProtectSettings) -> compose.KeptContent:
    body = how.body == "keep"
    inline = tuple(parts.inline_images()) if body and how.keep_inline_images else ()
    files: tuple[File, ...] = ()
    if how.attachments == "keep":
        files = tuple(f for f in parts.files if f not in inline)
    return compose.KeptContent(text=parts.text if body else "", html=parts.html if body else "",
                               files=files, inline_images=inline)
