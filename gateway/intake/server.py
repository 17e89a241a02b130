"""The submission listeners: 587 with STARTTLS and 465 with TLS from the first byte."""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP

from gateway.config import Listener, Settings
from gateway.intake.handler import Process, SubmissionHandler
from gateway.intake.limits import SessionLimits
from gateway.intake.smtp import SubmissionSMTP
from gateway.intake.throttle import AuthThrottle
from gateway.logs import get_logger
from gateway.spool.store import Spool
from gateway.users import UserStore

log = get_logger("pli.intake")


@dataclass
class Intake:
    servers: list[asyncio.Server]
    sessions: set[SubmissionSMTP]
    auth_pool: ThreadPoolExecutor

    def close(self) -> None:
        """Stop accepting connections; sessions already open go on."""
        for server in self.servers:
            server.close()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for open sessions to end, then close the rest.

        A message whose DATA is being processed finishes first: its 250 is only sent once
        it is in the spool, so closing after that loses nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.sessions and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        self.auth_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def ports(self) -> list[int]:
        return [s.sockets[0].getsockname()[1] for s in self.servers if s.sockets]


async def start_intake(
    settings: Settings, users: UserStore, process: Process, tls: ssl.SSLContext,
    spool: Spool, has_room: Callable[[], bool] = lambda: True,
) -> Intake:
    handler = SubmissionHandler(users, process, has_room)
    sessions: set[SubmissionSMTP] = set()
    auth_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                   thread_name_prefix="pli-auth")
    limits = settings.auth
    throttle = AuthThrottle(delay_after=limits.delay_after, max_failures=limits.max_failures,
                            window=limits.window, lockout=limits.lockout)
    open_limits = SessionLimits(total=settings.max_sessions,
                                per_client=settings.max_sessions_per_client,
                                login_timeout=settings.login_timeout)

    def factory(implicit_tls: bool) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH without require-TLS is unsafe; on the implicit-TLS
            # listener every byte is already encrypted, so the warning does not apply.
            warnings.simplefilter("ignore")
            return SubmissionSMTP(
                handler,
                users=users,
                throttle=throttle,
                implicit_tls=implicit_tls,
                sessions=sessions,
                auth_pool=auth_pool,
                limits=open_limits,
                spool=spool,
                hostname=settings.hostname,
                ident="ESMTP Pli",
                data_size_limit=settings.max_message_size,
                enable_SMTPUTF8=True,
                decode_data=False,
                tls_context=None if implicit_tls else tls,
                require_starttls=not implicit_tls,
                auth_required=True,
                auth_require_tls=not implicit_tls,
                timeout=settings.session_timeout,
                auth_exclude_mechanism=["CRAM-MD5"],
            )

    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    specs: list[tuple[Listener, bool]] = [(settings.submission, False),
                                          (settings.submissions, True)]
    try:
        for listener, implicit in specs:
            if not listener.enabled:
                continue
            server = await loop.create_server(
                functools.partial(factory, implicit),
                host=listener.host,
                port=listener.port,
                ssl=tls if implicit else None,
                ssl_handshake_timeout=30 if implicit else None,
                reuse_address=True,
            )
            servers.append(server)
            log.info("intake.listening", host=listener.host, port=listener.port,
                     security="tls" if implicit else "starttls")
    except OSError:
        for server in servers:
            server.close()
        auth_pool.shutdown(wait=False)
        raise
    return Intake(servers, sessions, auth_pool)
