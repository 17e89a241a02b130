"""Connections to the providers: opened, secured, logged in, kept for the next message,
and no more of them at once than the practice allows.

Each sender of the delivery loop is a :class:`Holder` of at most one connection, to its
account's provider. All accounts together hold at most ``[delivery] max_connections``:
a holder needs one of that many slots to open a connection; when none is free, a
connection kept open while idle is closed to make room, and while others wait, a holder
gives its slot back after each message.

A connection is opened with STARTTLS or TLS from the first byte as the account says,
with the provider's certificate checked against a context made once per account, and
never in clear when STARTTLS is missing; then Pli logs in with the account's password or
with an OAuth2 access token (SASL XOAUTH2, tokens from :mod:`~gateway.spool.oauth`).
Every failure is a :class:`TemporaryError` whose reply says, in words, what the practice
can do about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator

import aiosmtplib

from gateway.config import Settings, Upstream
from gateway.errors import reply_codes
from gateway.logs import get_logger
from gateway.spool.oauth import Token, Tokens
from gateway.spool.outcomes import TemporaryError

log = get_logger("pli.delivery")


class Holder:
    """One sender's connection (to its account's provider) and whether it holds one of
    the practice-wide connection slots."""

    __slots__ = ("connection", "slot")

    def __init__(self) -> None:
        self.connection: aiosmtplib.SMTP | None = None
        self.slot = False


class Connections:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.delivery.max_connections)
        self._waiters = 0  # holders waiting for a slot
        self._idle: set[Holder] = set()  # holding a slot, waiting for mail
        self._tls_contexts: dict[str, ssl.SSLContext] = {}
        self._tokens: dict[str, Tokens] = {}

    # -- slots -------------------------------------------------------------------------

    @contextlib.contextmanager
    def idle(self, holder: Holder) -> Iterator[None]:
        """While the holder waits for mail, its connection may be closed for another's."""
        if holder.slot:
            self._idle.add(holder)
        try:
            yield
        finally:
            self._idle.discard(holder)

    def should_release(self, holder: Holder) -> bool:
        """After a message: give the slot back if nothing is kept open with it, or if
        another holder is waiting for one."""
        return holder.slot and (holder.connection is None or self._waiters > 0)

    async def _acquire(self, holder: Holder) -> None:
        if holder.slot:
            return
        self._waiters += 1
        try:
            if self._slots.locked() and self._idle:
                await self.release(self._idle.pop())
            await self._slots.acquire()
            holder.slot = True
        finally:
            self._waiters -= 1

    async def release(self, holder: Holder) -> None:
        """Close the holder's connection (QUIT first), then give its slot back. The holder
        may wake meanwhile: it then finds neither connection nor slot, and waits its turn."""
        held, holder.slot = holder.slot, False
        smtp, holder.connection = holder.connection, None
        try:
            if smtp is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(smtp.quit(), 5)
                smtp.close()
        finally:
            if held:
                self._slots.release()

    def drop(self, holder: Holder) -> None:
        """Forget a connection that failed, without a QUIT it would not answer."""
        smtp, holder.connection = holder.connection, None
        if smtp is not None:
            smtp.close()

    # -- opening -----------------------------------------------------------------------

    async def get(self, account: Upstream, holder: Holder) -> tuple[aiosmtplib.SMTP, bool]:
        """The holder's open connection, or a new one; and whether it was kept open."""
        smtp = holder.connection
        if smtp is not None and smtp.is_connected:
            return smtp, True
        await self._acquire(holder)
        holder.connection = await self.open(account)
        return holder.connection, False

    async def open(self, account: Upstream) -> aiosmtplib.SMTP:
        delivery = self.settings.delivery
        # A token first: a token service that refuses costs the provider no connection.
        token = await self.tokens(account).get() if account.auth == "xoauth2" else None
        smtp = aiosmtplib.SMTP(
            hostname=account.host,
            port=account.port,
            use_tls=account.security == "tls",
            start_tls=False,  # done below, so that a provider without it can be named
            tls_context=self.tls_context(account),
            timeout=delivery.command_timeout,
            local_hostname=self.settings.hostname,
        )
        where = f"{account.host}:{account.port}"
        try:
            await smtp.connect(timeout=delivery.connect_timeout)
            if account.security == "starttls":
                await smtp.ehlo()
                if not smtp.supports_extension("starttls"):
                    raise TemporaryError(
                        f"451 4.7.4 The provider {where} does not offer STARTTLS, which account "
                        f"{account.name!r} requires: Pli does not send mail in clear")
                await smtp.starttls()
            await self.authenticate(smtp, account, token)
        except TemporaryError:
            smtp.close()
            raise
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise TemporaryError(
                f"451 4.7.0 The provider {where} refused Pli's login for account "
                f"{account.name!r} ({exc.code} {exc.message}); check the upstream password"
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            raise TemporaryError(f"451 4.4.1 {where} answered {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            untrusted = certificate_error(exc)
            if untrusted is not None:
                raise TemporaryError(
                    f"451 4.7.5 The provider {where} presented a certificate Pli does not "
                    f"trust ({untrusted.verify_message}); check ca_file for account "
                    f"{account.name!r}"
                ) from None
            raise TemporaryError(
                f"451 4.4.1 Cannot reach the provider {where} ({type(exc).__name__})"
            ) from None
        return smtp

    async def authenticate(self, smtp: aiosmtplib.SMTP, account: Upstream,
                           token: Token | None) -> None:
        """Log in as the account says: a password, an OAuth2 token (XOAUTH2), or nothing
        for an account without a username."""
        if token is not None:
            await self._xoauth2(smtp, account, token)
        elif account.username:
            await smtp.login(account.username, account.password() or "")
        else:
            await smtp.ehlo()

    def tokens(self, account: Upstream) -> Tokens:
        tokens = self._tokens.get(account.name)
        if tokens is None:
            tokens = self._tokens[account.name] = Tokens(
                account, self.settings.delivery.connect_timeout)
        return tokens

    async def _xoauth2(self, smtp: aiosmtplib.SMTP, account: Upstream, token: Token) -> None:
        assert account.username is not None and account.oauth is not None
        where = f"{account.host}:{account.port}"
        await smtp.ehlo()
        if "xoauth2" not in smtp.server_auth_methods:
            raise TemporaryError(
                f"451 4.7.4 The provider {where} does not offer AUTH XOAUTH2, which account "
                f"{account.name!r} logs in with")
        try:
            await smtp.auth_xoauth2(account.username, token.value)
        except aiosmtplib.SMTPAuthenticationError as exc:
            self.tokens(account).refused(token)
            log.warning("upstream.token_refused", account=account.name,
                        reply=reply_codes(f"{exc.code} {exc.message}") or str(exc.code))
            raise TemporaryError(
                f"451 4.7.0 The provider {where} refused the access token for account "
                f"{account.name!r} ({exc.code} {exc.message}); "
                f"{_who_may_send(account)}") from None

    def tls_context(self, account: Upstream) -> ssl.SSLContext:
        """One context per account, made once: loading the CA store for every connection
        costs more than the rest of the TLS set-up."""
        context = self._tls_contexts.get(account.name)
        if context is None:
            context = ssl.create_default_context(
                cafile=str(account.ca_file) if account.ca_file else None)
            if not account.verify_certificate:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls_contexts[account.name] = context
        return context


def _who_may_send(account: Upstream) -> str:
    assert account.oauth is not None
    if account.oauth.provider == "google":
        return (f"check that the service account may act for {account.username} "
                "(domain-wide delegation of https://mail.google.com/)")
    return (f"check that the application may send as {account.username} (SMTP.SendAsApp "
            "granted, its service principal added to the mailbox) and that SMTP AUTH is "
            "enabled for the mailbox")


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind a connection error (aiosmtplib wraps it for TLS)."""
    seen: BaseException | None = exc
    for _ in range(5):  # a short chain; never loop on a cyclic one
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
