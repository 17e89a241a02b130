"""The aiosmtpd handler: checks each step of a submission and hands the message on.

Only the hooks Pli needs are here; replies for every error come from the exceptions in
``gateway.errors`` and are produced in ``_reply_for``, the one place they are mapped.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session

from gateway.errors import InsufficientStorage, SmtpReplyError, smtp_reply
from gateway.logs import get_logger
from gateway.policy.domains import routes_elsewhere
from gateway.types import Envelope, Received, Submission
from gateway.users import UserStore

log = get_logger("pli.intake")

Process = Callable[[Submission], Awaitable[str]]

MAX_RECIPIENTS = 100
_UNWRITABLE = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff]")  # surrogates: bytes not UTF-8


class SubmissionHandler:
    def __init__(self, users: UserStore, process: Process,
                 has_room: Callable[[], bool] = lambda: True) -> None:
        self.users = users
        self.process = process
        self.has_room = has_room

    def __dir__(self) -> list[str]:
        """aiosmtpd finds the hooks with ``dir()`` for every connection: list just them,
        but for ``handle_EHLO``, whose arguments it would inspect each time
        (``SubmissionSMTP`` sets that hook itself)."""
        return [n for n in dir(type(self)) if n.startswith("handle_") and n != "handle_EHLO"]

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: SmtpEnvelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return responses[:-1] + extra + ["250 HELP"]

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: SmtpEnvelope, address: str,
        mail_options: list[str],
    ) -> str:
        user = self.users.get(str(session.auth_data))
        if user is None:  # the account was removed since this session logged in
            return smtp_reply(530, "5.7.0", "Votre compte n'existe plus sur ce serveur",
                              "Your account is no longer valid on this server")
        if address in ("", "<>"):  # aiosmtpd hands the null reverse-path on as "<>"
            return smtp_reply(550, "5.7.1", "Un expéditeur vide (<>) ne peut pas envoyer",
                              "An empty sender (<>) cannot be used to submit mail")
        if not self.has_room():  # said now, before the client uploads the message
            log.warning("session.disk_full", client=_client(session), user=user.name)
            return InsufficientStorage().reply
        if not user.may_send_as(address):
            log.info("session.sender_refused", client=_client(session), user=user.name,
                     sender=address)
            allowed = ", ".join(user.addresses)
            return smtp_reply(
                550, "5.7.1",
                f"Ce compte ne peut pas envoyer en tant que {address} ; "
                f"adresses permises : {allowed or 'aucune pour le moment'}",
                f"You may not send as {address}: this account may send only as "
                f"{allowed or 'no address yet'}")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: SmtpEnvelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return smtp_reply(452, "4.5.3",
                              f"Trop de destinataires : {MAX_RECIPIENTS} au plus par envoi",
                              f"Too many recipients: send to at most {MAX_RECIPIENTS} at a time")
        if "@" not in address:
            return smtp_reply(553, "5.1.3", "Un destinataire doit être une adresse complète "
                              "(nom@domaine)", "A recipient must be a full address (name@domain)")
        if _UNWRITABLE.search(address):
            # A control character (a NUL, a line break) or bytes that are not UTF-8: no
            # reader agrees on where such an address goes, and none is needed.
            return smtp_reply(553, "5.1.3", "Adresse refusée : elle contient un caractère de "
                              "contrôle ou des octets illisibles",
                              "Address refused: it holds a control character or unreadable "
                              "bytes")
        if routes_elsewhere(address):
            # The provider may deliver it to another domain than the one the policy sees.
            log.info("session.recipient_refused", client=_client(session),
                     recipient=address, reason="routes elsewhere")
            return smtp_reply(
                553, "5.1.3", "Adresse refusée : un « % », un « ! » ou un second « @ » avant "
                "le domaine peut mener le message ailleurs ; vérifiez l'adresse du destinataire",
                "Address refused: a \"%\", \"!\" or second \"@\" before the domain can take "
                "the message elsewhere; check the recipient's address")
        if address.lower() not in (r.lower() for r in envelope.rcpt_tos):
            envelope.rcpt_tos.append(address)  # a repeated recipient gets one copy
            envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: SmtpEnvelope) -> str:
        """The message is in the file the DATA phase wrote; the pipeline takes it from
        here (and removes the file once done with it)."""
        path: Path | None = getattr(envelope, "path", None)
        transfer = getattr(envelope, "transfer", None)
        assert path is not None and transfer is not None, "DATA is read by SubmissionSMTP"
        user = self.users.get(str(session.auth_data))
        submission = Submission(
            envelope=Envelope(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                smtputf8="SMTPUTF8" in (o.upper() for o in envelope.mail_options),
            ),
            path=path,
            user=str(session.auth_data),
            client=_client(session),
            allowed_senders=frozenset(user.addresses) if user else frozenset(),
            received=Received(size=transfer.size, long_lines=transfer.long_lines),
            queue_id=getattr(envelope, "queue_id", ""),
        )
        try:
            queue_id = await self.process(submission)
        except Exception as exc:  # every failure becomes a reply; nothing is half-kept
            return _reply_for(exc, session)
        return f"250 2.0.0 Queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        return _reply_for(error, None)


def _reply_for(exc: BaseException, session: Session | None) -> str:
    if isinstance(exc, SmtpReplyError):
        log.info("session.refused", client=_client(session), code=exc.code, status=exc.status)
        return exc.reply
    # The exception text may quote message content: log its type only.
    log.error("session.internal_error", client=_client(session), error=type(exc).__name__)
    return smtp_reply(451, "4.3.0", "Pli n'a pas pu prendre ce message à cause d'une erreur "
                      "interne ; réessayez dans quelques minutes",
                      "Pli could not take this message because of an internal error; "
                      "try again in a few minutes")


def _client(session: Session | None) -> str:
    peer = session.peer if session else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
