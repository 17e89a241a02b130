"""aiosmtpd's SMTP protocol, adjusted for a submission server that real mail clients use.

- AUTH PLAIN and LOGIN check passwords in a worker thread (scrypt must not stall the
  event loop), behind a per-address throttle, and LOGIN asks "Username:"/"Password:",
  the only challenges Thunderbird and Outlook accept. PLAIN with an authorization
  identity other than the login fails (RFC 4616): no user acts for another.
- On the implicit-TLS listener the connection is TLS from the first byte; aiosmtpd only
  knows STARTTLS, so that listener is built with ``auth_require_tls=False`` and is only
  ever served over an SSL socket (see ``intake.server``).
- Every reply carries an enhanced status code (RFC 2034), added here to aiosmtpd's own
  replies, except the greeting and the EHLO/HELO answers, which the RFC leaves bare, and
  is printable ASCII: what it quotes from the client is flattened here.
- A connection over the session limits gets 421 instead of the greeting, and one that
  has not logged in ``login_timeout`` seconds after connecting gets 421 and is closed.
- DATA is streamed to a file in the spool as it arrives (``intake.data``), never held
  in memory; past SIZE the rest is read and thrown away, and the client hears 552.
- A command line that ends in a bare LF, or holds one, is refused with 500 and the
  connection closed, as Postfix 3.9 does with ``smtpd_forbid_bare_newline``: it is
  never read as two commands.
"""

from __future__ import annotations

import asyncio
import binascii
import re
from base64 import b64decode
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, TLSSetupException, syntax
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from gateway.errors import InsufficientStorage, SmtpReplyError, smtp_reply
from gateway.intake.data import DataReader, DataStream, IncomingFile, Transfer, receive
from gateway.intake.limits import SessionLimits
from gateway.intake.throttle import AuthThrottle
from gateway.logs import get_logger
from gateway.spool.store import Spool, is_disk_full, new_queue_id
from gateway.users import UserStore

if TYPE_CHECKING:
    from asyncio.streams import _ReaduntilBuffer

log = get_logger("pli.intake")

_HAS_STATUS = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}\b")
_REPLY = re.compile(r"^([245]\d\d)([ -])(.*)$", re.S)
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_UNKNOWN_COMMAND = re.compile(r'^500 Error: command "(.*)" not recognized$', re.S)

# Default enhanced status per reply code, for aiosmtpd's built-in replies.
_STATUS_FOR_CODE = {
    "220": "2.0.0", "221": "2.0.0", "235": "2.7.0", "250": "2.0.0", "251": "2.1.5",
    "252": "2.5.0", "421": "4.3.0", "450": "4.2.0", "451": "4.3.0", "452": "4.5.3",
    "454": "4.7.0", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1",
    "504": "5.5.4", "530": "5.7.0", "534": "5.7.9", "535": "5.7.8", "538": "5.7.11",
    "550": "5.7.1", "552": "5.3.4", "553": "5.1.3", "554": "5.6.0", "555": "5.5.4",
}

# aiosmtpd replies whose wording a practice secretary would not understand.
_TOO_BIG = smtp_reply(552, "5.3.4", "Le message est trop gros pour ce serveur",
                      "The message is too big for this server")
_REWORDED = {
    "530 5.7.0 Authentication required": smtp_reply(
        530, "5.7.0", "Identification requise : réglez votre logiciel de messagerie pour "
        "qu'il se connecte à ce serveur d'envoi", "Authentication required: set your mail "
        "client to log in to this outgoing server"),
    "530 Must issue a STARTTLS command first": smtp_reply(
        530, "5.7.0", "Commencez par STARTTLS : réglez la sécurité de la connexion sur "
        "STARTTLS", "Use STARTTLS first: set the connection security to STARTTLS"),
    "552 Error: Too much mail data": _TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": _TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": smtp_reply(
        500, "5.5.2", "Une ligne du message est trop longue",
        "A line of the message is too long"),
    "503 Error: need MAIL command": "503 5.5.1 Give MAIL FROM first",
    "503 Error: need RCPT command": "503 5.5.1 Give RCPT TO first",
}


_BUSY_ALL = smtp_reply(421, "4.7.0", "Le serveur a trop de connexions en cours ; "
                       "réessayez dans un instant", "The server has too many connections "
                       "open; try again in a moment")
_BUSY_CLIENT = smtp_reply(421, "4.7.0", "Trop de connexions ouvertes depuis votre adresse ; "
                          "réessayez dans un instant", "Too many connections open from "
                          "your address; try again in a moment")
_ACTING_AS_ANOTHER = smtp_reply(
    535, "5.7.8", "Ce serveur ne permet pas de se connecter au nom d'un autre utilisateur : "
    "laissez vide l'identité d'autorisation", "This server does not let a login act as "
    "another user: leave the authorization identity empty")
_TLS_FAILED = smtp_reply(454, "4.7.0", "La connexion chiffrée n'a pas pu s'établir",
                        "The encrypted connection could not be set up")
_LOGIN_TIMEOUT = smtp_reply(421, "4.7.0", "Pas d'identification à temps : connexion fermée",
                            "No login in time: closing the connection")


_NUL = smtp_reply(550, "5.6.0", "Le message contient un octet nul, qu'aucune messagerie "
                  "n'envoie : il n'est pas envoyé ; vérifiez le logiciel qui l'a écrit",
                  "The message contains a NUL byte, which no mail client sends: it was not "
                  "sent; check the software that wrote it")


class BareNewline(SmtpReplyError):
    """A command line with a bare LF: refused, and the connection closed."""

    code = 500
    status = "5.5.2"

    def __init__(self) -> None:
        super().__init__("Ligne de commande terminée par LF sans CR : refusée, connexion "
                         "fermée / Command line ended by LF without CR: refused, closing "
                         "the connection")


class CommandReader(DataStream):
    """aiosmtpd reads commands (and AUTH answers) with ``readuntil()``: a line that does
    not end in CRLF is refused instead of being read as a command of its own, whatever
    the client sent after it is thrown away, and the session ends (the next "command"
    is Pli's own QUIT, so nothing the client sent can follow)."""

    refused = False

    async def readuntil(self, separator: _ReaduntilBuffer = b"\n") -> bytes:
        if separator == b"\n" and self.refused:
            return b"QUIT\r\n"
        line = await super().readuntil(separator)
        if separator == b"\n" and not line.endswith(b"\r\n"):
            self.refused = True
            self._buffer.clear()
            raise BareNewline()
        return line


_PLAIN_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+)>(.*)\Z", re.S)


def _commands_of(cls: type) -> list[str]:
    names = _COMMANDS.get(cls)
    if names is None:
        names = _COMMANDS[cls] = sorted(
            n for n in dir(cls) if n.startswith(("smtp_", "auth_")))
    return names


_COMMANDS: dict[type, list[str]] = {}


class SubmissionEnvelope(SmtpEnvelope):
    """aiosmtpd's envelope, with the file the message was written to."""

    def __init__(self) -> None:
        super().__init__()
        self.queue_id = ""
        self.path: Path | None = None
        self.transfer: Transfer | None = None


def printable(text: str) -> str:
    """Printable ASCII only: what a reply quotes from the client (a NUL, an escape,
    bytes that are not UTF-8) becomes "?", so it can neither break the reply nor the
    terminal or log that shows it."""
    return _NOT_PRINTABLE.sub("?", text)


def with_enhanced_status(reply: str) -> str:
    if reply in _REWORDED:
        return _REWORDED[reply]
    unknown = _UNKNOWN_COMMAND.match(reply)
    if unknown:
        command = printable(unknown.group(1))
        command = command if len(command) <= 32 else command[:32] + "..."
        return smtp_reply(500, "5.5.2", f'Commande inconnue : "{command}"',
                          f'Command not recognized: "{command}"')
    if _HAS_STATUS.match(reply):
        return reply
    match = _REPLY.match(reply)
    if not match:
        return reply
    code, sep, text = match.groups()
    status = _STATUS_FOR_CODE.get(code, f"{code[0]}.0.0")
    return f"{code}{sep}{status} {text}"


class SubmissionSMTP(SMTP):
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"
    # The reader's buffer: DATA is read in pieces of this size (aiosmtpd's own 1001 is
    # for reading DATA line by line, which Pli does not do).
    line_length_limit = 64 * 1024

    def __init__(
        self,
        handler: Any,
        *,
        users: UserStore,
        throttle: AuthThrottle,
        implicit_tls: bool,
        sessions: set[SubmissionSMTP],
        auth_pool: Executor,
        limits: SessionLimits,
        spool: Spool,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        ehlo = getattr(handler, "handle_EHLO", None)
        if ehlo is not None:  # the five-argument form aiosmtpd would check it has
            self._handle_hooks["EHLO"] = ehlo
            self._ehlo_hook_ver = "new"
        self.spool = spool
        self.sessions = sessions
        self.limits = limits
        self._refused: str | None = None  # the limit a session was over, if it was
        self._counted: str | None = None  # the client address it counts for
        self._login_timer: asyncio.TimerHandle | None = None
        self.auth_pool = auth_pool
        self.users = users
        self.throttle = throttle
        self.implicit_tls = implicit_tls
        self._bare_replies = True  # until the greeting is out
        self._held_lines: list[str] | None = None  # a multi-line reply being built

    # -- connection ------------------------------------------------------------------

    def _cb_client_connected(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        reader.__class__ = CommandReader  # same object, commands read as Pli reads them
        super()._cb_client_connected(reader, writer)

    def _create_envelope(self) -> SubmissionEnvelope:
        return SubmissionEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self.sessions.add(self)
            if self.implicit_tls and self.session is not None:
                self.session.ssl = transport.get_extra_info("ssl_object")
            client = self.client_address
            self._refused = self.limits.admit(client)
            if self._refused is None:
                self._counted = client
                self._login_timer = self.loop.call_later(self.limits.login_timeout,
                                                         self._login_expired)

    def connection_lost(self, error: Exception | None) -> None:
        self.sessions.discard(self)
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None
        if self._counted is not None:
            self.limits.leave(self._counted)
            self._counted = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._refused is not None:
            log.warning("session.refused_busy", client=self.client_address,
                        limit=self._refused, open=self.limits.open)
            await self.push(_BUSY_ALL if self._refused == "total" else _BUSY_CLIENT)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _login_expired(self) -> None:
        self._login_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        log.info("session.login_timeout", client=self.client_address)
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_LOGIN_TIMEOUT.encode() + b"\r\n")
        transport.close()

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A client that closed after "220 Ready to start TLS", spoke in clear, or did
            # not trust the certificate: an everyday event, not a fault of Pli's. aiosmtpd
            # closes the connection without sending the reply returned here.
            cause = error.__cause__
            reason = getattr(cause, "reason", None) or type(cause).__name__
            log.info("session.tls_failed", client=self.client_address, reason=str(reason))
            return _TLS_FAILED
        if isinstance(error, BareNewline):
            log.info("session.bare_newline", client=self.client_address)
            return error.reply
        return str(await super().handle_exception(error))

    @property
    def client_address(self) -> str:
        peer = self.session.peer if self.session else None
        if isinstance(peer, tuple) and peer:
            return str(peer[0])
        return "unknown"


    # -- what aiosmtpd looks up for every connection ---------------------------------

    def __dir__(self) -> list[str]:
        """aiosmtpd finds its commands and AUTH mechanisms with ``dir()`` each time a
        connection is made; listing only those makes a connection cost a fifth of what
        listing every attribute costs."""
        return _commands_of(type(self))

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd replaces the idle timer at every command; moving a deadline is
        enough, the timer is only re-armed when it fires early."""
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        if self._timeout_handle is None:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)

    def _idle_check(self) -> None:
        if self.loop.time() < self._idle_deadline:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)
        else:
            # The handle stays set: connection_lost cancels it.
            self._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address in ``MAIL FROM:``/``RCPT TO:``: ``<local@domain>`` read at once,
        anything less plain by aiosmtpd's full parser."""
        match = _PLAIN_PATH.match(arg) if arg else None
        if match is None:
            return super()._getaddr(arg)
        return match.group(1), match.group(2)

    # -- replies ---------------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            status = "\r\n".join(printable(line) for line in status.split("\r\n"))
            if self._bare_replies:
                if status.startswith("220 ") and "2.0.0" not in status:
                    self._bare_replies = False  # that was the greeting
            else:
                status = with_enhanced_status(status)
            if self._held_lines is not None:
                self._held_lines.append(status)
                return
        await self._release_lines()
        await super().push(status)

    async def _release_lines(self) -> None:
        lines, self._held_lines = self._held_lines, None
        if lines:
            await super().push("\r\n".join(lines))

    async def smtp_EHLO(self, hostname: str) -> None:
        # aiosmtpd writes each line of the reply on its own: eight TLS records and
        # eight sends where one does, twice per session.
        self._bare_replies = True
        self._held_lines = []
        try:
            await super().smtp_EHLO(hostname)
        except BaseException:
            self._held_lines = None  # half a reply is no reply; the error gets its own
            raise
        finally:
            self._bare_replies = False
        await self._release_lines()

    async def smtp_HELO(self, hostname: str) -> None:
        self._bare_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._bare_replies = False

    # -- DATA ---------------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, SubmissionEnvelope)
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        envelope.queue_id = new_queue_id()
        incoming = IncomingFile(self.spool.incoming(envelope.queue_id), self.spool.run)
        incoming.begin(self.spool.submit)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            assert isinstance(self._reader, DataStream)  # the server makes every reader one
            transfer = await receive(self._reader, DataReader(self.data_size_limit),
                                     incoming.write, self._reset_timeout)
        except BaseException as exc:
            incoming.discard()
            if isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
                log.info("session.data_interrupted", client=self.client_address)
                if self.transport is not None:
                    self.transport.close()
                return
            if is_disk_full(exc):  # nothing kept: the client keeps the message
                assert isinstance(exc, OSError)
                log.error("session.disk_full", client=self.client_address, at="data",
                          error=exc.strerror or "no space left")
                self._set_post_data_state()  # type: ignore[no-untyped-call]
                await self.push(InsufficientStorage().reply)
                return
            raise
        if transfer.too_big or transfer.nul:
            incoming.discard()
            log.info("session.data_refused", client=self.client_address,
                     size=transfer.size, nul=transfer.nul, too_big=transfer.too_big)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(_TOO_BIG if transfer.too_big else _NUL)
            return
        try:
            incoming.close()
        except BaseException:
            incoming.discard()
            raise
        # From here the file is the handler's: the pipeline removes it once done with it.
        envelope.path, envelope.transfer = incoming.path, transfer
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    # -- authentication ----------------------------------------------------------------

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                return await self._malformed()
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            return await self._malformed()
        authzid, login, password = parts
        if authzid and authzid != login:
            # RFC 4616: acting as someone else must fail unless the server allows it, and
            # Pli lets no user send for another. Refused before any password is checked.
            log.warning("session.auth_failed", client=self.client_address, mechanism="PLAIN",
                        reason="authorization identity")
            return AuthResult(success=False, handled=False, message=_ACTING_AS_ANOTHER)
        return await self._check_password("PLAIN", login, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                return await self._malformed()
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check_password("LOGIN", login, password)

    async def _malformed(self) -> AuthResult:
        await self.push("501 5.5.2 Cannot decode the authentication data")
        return AuthResult(success=False, handled=True)

    async def _check_password(self, mechanism: str, login: bytes, password: bytes) -> AuthResult:
        client = self.client_address
        if not await self.throttle.admit(client):
            log.warning("session.auth_locked", client=client)
            return AuthResult(
                success=False, handled=False,
                message=smtp_reply(454, "4.7.0", "Trop d'échecs d'identification depuis "
                                   "votre adresse ; réessayez plus tard",
                                   "Too many failed logins from your address; try again later"),
            )
        name = login.decode("utf-8", "replace")
        secret = password.decode("utf-8", "replace")
        delay = 0.0
        try:
            # Its own threads: a burst of logins must not hold up messages waiting for theirs.
            user = await asyncio.get_running_loop().run_in_executor(
                self.auth_pool, self.users.authenticate, name, secret)
            if user is None:
                delay = self.throttle.failed(client)
            else:
                self.throttle.succeeded(client)
        finally:
            self.throttle.done(client)
        if user is None:
            # No user name: a password typed into the name field must not reach the logs.
            log.warning("session.auth_failed", client=client, mechanism=mechanism)
            if delay:
                await asyncio.sleep(delay)
            return AuthResult(
                success=False, handled=False,
                message=smtp_reply(535, "5.7.8", "Nom d'utilisateur ou mot de passe incorrect",
                                   "Wrong user name or password"),
            )
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None
        log.info("session.authenticated", client=client, user=user.name, mechanism=mechanism)
        return AuthResult(success=True, auth_data=user.name)
