"""The way to the provider: STARTTLS or TLS as configured, a certificate Pli trusts, and the
practice's account login. Patient mail never crosses the network in clear by accident."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import AuthResult

from tests.spool.helpers import PATIENT, queued, submit, wait_deferred, wait_queue_empty
from tests.support import Gateway, LoopThread, Provider, RunningApp, make_gateway, wait_until

ACCOUNT = "cabinet@cabinet-martin.fr"
ACCOUNT_PASSWORD = "provider side secret"
NEVER = "503 5.5.1 The test provider was never meant to see MAIL"


@pytest.fixture(scope="module")
def provider_ca() -> trustme.CA:
    return trustme.CA()


class AccountProvider(Provider):
    """The support provider answers a failed login with nothing at all (aiosmtpd's
    ``handled=True``); a real provider says 535, which is what this one does."""

    def _authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str,
                       auth_data: Any) -> Any:
        result = super()._authenticator(server, session, envelope, mechanism, auth_data)
        return result if result.success else AuthResult(success=False, handled=False)


def provider_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def configure_upstream(gw: Gateway, *, ca_file: Path | None = None,
                       login: str | None = None) -> None:
    config = gw.config.read_text()
    if ca_file is not None:
        config = config.replace('ca_file = "tls/cert.pem"', f'ca_file = "{ca_file}"')
    if login is not None:
        (gw.folder / "upstream-password").write_text(login + "\n")
        config = config.replace('# username = "cabinet@example.fr"', f'username = "{ACCOUNT}"')
        config = config.replace('# password_file = "upstream-password"',
                                'password_file = "upstream-password"')
    gw.config.write_text(config)


@pytest.fixture
def started(loop: LoopThread) -> Iterator[list[Provider | RunningApp]]:
    """Whatever a test starts, stopped at the end in reverse order."""
    things: list[Provider | RunningApp] = []
    yield things
    for thing in reversed(things):
        thing.stop()


def test_starttls_required_but_not_offered_keeps_the_message_queued_and_says_why(
        tmp_path: Path, loop: LoopThread, started: list[Provider | RunningApp]) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    provider.handler.mail_replies.append(NEVER)
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    queue_id = submit(gw)
    meta = wait_deferred(gw, queue_id)
    assert "STARTTLS" in meta.last_error and meta.last_error.startswith("4")
    wait_until(lambda: (m := queued(gw)) and m[0].attempts >= 3, timeout=10)
    assert provider.handler.mail_replies == [NEVER]  # no MAIL FROM was ever sent
    assert provider.received == []
    assert [m.id for m in queued(gw)] == [queue_id]


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_provider_certificate_pli_does_not_trust_is_not_used(
        tmp_path: Path, loop: LoopThread, provider_ca: trustme.CA,
        started: list[Provider | RunningApp], security: str) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security=security)  # trusts only its own
    provider = Provider(loop, provider_context(provider_ca), gw.provider_port,
                        implicit_tls=security == "tls").start()
    provider.handler.mail_replies.append(NEVER)
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    queue_id = submit(gw)
    meta = wait_deferred(gw, queue_id)
    assert "certificate Pli does not trust" in meta.last_error
    time.sleep(1.0)
    assert provider.handler.mail_replies == [NEVER]
    assert provider.received == []
    assert [m.id for m in queued(gw)] == [queue_id]


def test_starttls_with_the_providers_ca_and_a_login_delivers(
        tmp_path: Path, loop: LoopThread, provider_ca: trustme.CA,
        started: list[Provider | RunningApp]) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    provider_ca.cert_pem.write_to_path(str(tmp_path / "provider-ca.pem"))
    configure_upstream(gw, ca_file=tmp_path / "provider-ca.pem", login=ACCOUNT_PASSWORD)
    provider = Provider(loop, provider_context(provider_ca), gw.provider_port,
                        users={ACCOUNT: ACCOUNT_PASSWORD}).start()
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    submit(gw)
    got = wait_until(lambda: provider.received, timeout=10)
    wait_queue_empty(gw)
    assert got[0].rcpt_tos == [PATIENT]


def test_implicit_tls_with_the_providers_ca_and_a_login_delivers(
        tmp_path: Path, loop: LoopThread, provider_ca: trustme.CA,
        started: list[Provider | RunningApp]) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="tls")
    provider_ca.cert_pem.write_to_path(str(tmp_path / "provider-ca.pem"))
    configure_upstream(gw, ca_file=tmp_path / "provider-ca.pem", login=ACCOUNT_PASSWORD)
    provider = Provider(loop, provider_context(provider_ca), gw.provider_port,
                        implicit_tls=True, users={ACCOUNT: ACCOUNT_PASSWORD}).start()
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    submit(gw)
    wait_until(lambda: provider.received, timeout=10)
    wait_queue_empty(gw)


def test_a_wrong_provider_password_defers_with_a_reply_naming_the_account(
        tmp_path: Path, loop: LoopThread, provider_ca: trustme.CA,
        started: list[Provider | RunningApp]) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    provider_ca.cert_pem.write_to_path(str(tmp_path / "provider-ca.pem"))
    configure_upstream(gw, ca_file=tmp_path / "provider-ca.pem", login="not the password")
    provider = AccountProvider(loop, provider_context(provider_ca), gw.provider_port,
                               users={ACCOUNT: ACCOUNT_PASSWORD}).start()
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    queue_id = submit(gw)
    meta = wait_deferred(gw, queue_id)
    assert meta.last_error.startswith("451 4.7.0")
    assert "'default'" in meta.last_error and "password" in meta.last_error
    assert provider.received == []
