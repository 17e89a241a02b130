"""What Pli writes about a link after sending: to its sender, a notice that the message
was opened, a document downloaded or the link expired unopened; and the notice of a
secure reply written on the portal, to whichever side of the thread it goes.

Everything comes from the link's row in the vault's index (addresses, times, counts,
ids), which holds no subject, text or file name: a notice cannot carry what it never
had. A reply's link, with its key in the fragment, is the one secret a notice carries,
as the notice of a protected message does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings
from gateway.transform import compose
from gateway.transform.templates import (
    CODE_SENTENCE,
    CONTACT_SENTENCE,
    EVENT_SENTENCE,
    EVENT_TITLE,
    REPLY_CODE_SENTENCE,
    TemplateSet,
    format_date,
    load_templates,
)
from gateway.types import NoticeEvent
from gateway.vault import LinkInfo


@dataclass(frozen=True)
class Mail:
    """One message Pli writes itself, with its envelope."""

    mail_from: str
    recipients: tuple[str, ...]
    body: bytes


class SenderMail:
    """Writes the notices about links, in each link's language and template."""

    def __init__(self, settings: Settings, template_dirs: Sequence[Path]) -> None:
        self.settings = settings
        self.template_dirs = list(template_dirs)

    def _templates(self, info: LinkInfo) -> TemplateSet:
        language = info.options.language if info.options.language in ("fr", "en") else "fr"
        return load_templates(self.template_dirs, language, info.options.template)

    def event(self, info: LinkInfo, event: NoticeEvent, *, at: float,
              document: int | None = None, count: int | None = None) -> Mail:
        """A notice to the link's sender: ``document`` (from 1) and ``count`` (its
        downloads so far) for a download."""
        templates = self._templates(info)
        language = templates.language
        total = len(info.files)
        sentence = EVENT_SENTENCE[event][language].format(
            n=document or 0, total=total, count=count or 0, limit=info.download_limit)
        values = {
            "event_title": EVENT_TITLE[event][language],
            "event_sentence": sentence,
            "recipients": ", ".join(info.recipients),
            "time": format_date(at, language),
            "message_date": format_date(info.created, language),
            "link_id": info.id,
        }
        body = compose.receipt(sender=info.sender,
                               subject=templates.line("event-subject.txt", values),
                               text=templates.render("event.txt", values),
                               hostname=self.settings.hostname)
        return Mail(info.sender, (info.sender,), body)

    def reply(self, parent: LinkInfo, reply: LinkInfo, link: str) -> Mail:
        """The notice of ``reply``, written on ``parent``'s page: to the practice's sender
        when the patient wrote it, to the patient's addresses when the sender answered.
        Never to any other address: both come from the link's row."""
        templates = self._templates(reply)
        language = templates.language
        practice = self.settings.practice
        if reply.origin == "patient":
            values = {
                "from": ", ".join(reply.recipients),
                "message_date": format_date(parent.created, language),
                "parent_id": parent.id,
                "practice": practice.name,
                "link": link,
                "code_sentence": REPLY_CODE_SENTENCE[language] if reply.has_code else "",
                "expiry": format_date(reply.expires, language),
                "downloads": str(reply.download_limit),
            }
            body = compose.receipt(sender=reply.sender,
                                   subject=templates.line("reply-subject.txt", values),
                                   text=templates.render("reply.txt", values),
                                   hostname=self.settings.hostname)
            return Mail(reply.sender, (reply.sender,), body)
        contact = practice.contact
        values = {
            "practice": practice.name,
            "link": link,
            "expiry": format_date(reply.expires, language),
            "downloads": str(reply.download_limit),
            "code_sentence": CODE_SENTENCE[language] if reply.has_code else "",
            "contact_sentence":
                CONTACT_SENTENCE[language].format(contact=contact) if contact else "",
        }
        segments = compose.notice(
            None, subject=templates.line("subject.txt", values),
            text=templates.render("notice.txt", values),
            html=templates.render("notice.html", values), hostname=self.settings.hostname,
            addresses=(reply.sender, reply.recipients))
        return Mail(reply.sender, reply.recipients,
                    b"".join(s for s in segments if isinstance(s, bytes)))
