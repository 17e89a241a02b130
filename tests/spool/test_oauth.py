"""OAuth2 to the provider (SASL XOAUTH2): a token from a local token endpoint that checks
the grant, a local provider that takes only valid unexpired tokens. Delivered; one token
for many messages; refreshed once it ends; a revoked secret defers and says why; a
password account beside keeps working."""

from __future__ import annotations

import datetime
import json
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.spool.helpers import (
    OTHER_PATIENT,
    PATIENT,
    named,
    stays,
    submit,
    wait_deferred,
    wait_queue_empty,
)
from tests.spool.oauth_peers import (
    CLIENT_ID,
    CLIENT_SECRET,
    MAILBOX,
    SERVICE_ACCOUNT,
    XOAUTH2_ONLY,
    TokenEndpoint,
    XOAuthSink,
)
from tests.support import (
    ADDRESS,
    HOST,
    OTHER_ADDRESS,
    OTHER_PASSWORD,
    OTHER_USER,
    Gateway,
    LoopThread,
    Provider,
    RunningApp,
    make_gateway,
    wait_until,
)

Events = list[dict[str, Any]]
PASSWORD_ACCOUNT = "secretariat@cabinet-martin.fr"
PASSWORD = "provider side secret"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def started(loop: LoopThread) -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.stop()


def tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def upstreams(gw: Gateway, ca: trustme.CA, blocks: str) -> None:
    """Replace the gateway's [[upstream]] account with ``blocks``."""
    ca.cert_pem.write_to_path(str(gw.folder / "provider-ca.pem"))
    config = gw.config.read_text()
    config = re.sub(r"^\[\[upstream\]\].*?(?=\n\[delivery\])", blocks, config,
                    flags=re.DOTALL | re.MULTILINE)
    gw.config.write_text(config)


def oauth_account(port: int, endpoint: TokenEndpoint, oauth: str, *, name: str = "default",
                  senders: str = '"*"') -> str:
    return (f'[[upstream]]\nname = "{name}"\nsenders = [{senders}]\nhost = "{HOST}"\n'
            f'port = {port}\nsecurity = "starttls"\nca_file = "provider-ca.pem"\n'
            f'username = "{MAILBOX}"\nauth = "xoauth2"\n\n[upstream.oauth]\n'
            f'token_url = "{endpoint.url}"\n{oauth}\n')


def client_secret(gw: Gateway) -> str:
    (gw.folder / "client-secret").write_text(CLIENT_SECRET + "\n")
    return (f'provider = "microsoft365"\nclient_id = "{CLIENT_ID}"\n'
            f'client_secret_file = "client-secret"\n')


def oauth_provider(loop: LoopThread, ca: trustme.CA, port: int, endpoint: TokenEndpoint,
                   **options: Any) -> Provider:
    provider = Provider(loop, tls(ca), port, smtp_options=XOAUTH2_ONLY)
    provider.handler = XOAuthSink(endpoint=endpoint, **options)
    return provider.start()


def sink(provider: Provider) -> XOAuthSink:
    assert isinstance(provider.handler, XOAuthSink)
    return provider.handler


def no_secret_in(events: Events, endpoint: TokenEndpoint) -> None:
    """Neither the client secret nor a token ever reaches the log."""
    text = json.dumps(events, default=str)
    assert CLIENT_SECRET not in text
    assert not any(token in text for token in endpoint.tokens)


def test_a_token_from_the_client_secret_is_delivered_with_and_reused(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any],
        events: Events) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    endpoint = TokenEndpoint(loop).start()
    started.append(endpoint)
    upstreams(gw, ca, oauth_account(gw.provider_port, endpoint, client_secret(gw)))
    provider = oauth_provider(loop, ca, gw.provider_port, endpoint)
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    submit(gw)
    wait_until(lambda: provider.received, timeout=10)
    wait_until(lambda: provider.handler.open_now == 0, timeout=5)  # idle: closed (0.5 s)
    submit(gw, (OTHER_PATIENT,))
    wait_until(lambda: len(provider.received) == 2, timeout=10)
    wait_queue_empty(gw)
    assert len(endpoint.grants) == 1  # one token, two connections
    assert sink(provider).logins == [MAILBOX, MAILBOX] and sink(provider).refused == 0
    assert [r.rcpt_tos for r in provider.received] == [[PATIENT], [OTHER_PATIENT]]
    assert endpoint.grants[0]["client_secret"] == CLIENT_SECRET
    no_secret_in(events, endpoint)


def test_a_token_lives_in_memory_only_never_in_a_file_or_the_log(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any],
        events: Events) -> None:
    """After a delivery with a token, no file of the practice's folder (configuration,
    spool, vault, audit trail, sending limits) holds it, nor any log event."""
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    endpoint = TokenEndpoint(loop).start()
    started.append(endpoint)
    upstreams(gw, ca, oauth_account(gw.provider_port, endpoint, client_secret(gw)))
    provider = oauth_provider(loop, ca, gw.provider_port, endpoint)
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    submit(gw)
    wait_until(lambda: provider.received, timeout=10)
    wait_queue_empty(gw)
    assert sink(provider).logins == [MAILBOX] and len(endpoint.tokens) == 1
    (token,) = (issued.encode() for issued in endpoint.tokens)
    files = [path for path in gw.folder.rglob("*") if path.is_file()]
    assert len(files) > 10
    assert [path for path in files if token in path.read_bytes()] == []
    no_secret_in(events, endpoint)


def test_a_token_that_ends_mid_queue_is_refreshed_before_the_provider_refuses_it(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any]) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    endpoint = TokenEndpoint(loop, lifetime=2).start()  # tokens of two seconds
    started.append(endpoint)
    upstreams(gw, ca, oauth_account(gw.provider_port, endpoint, client_secret(gw)))
    provider = oauth_provider(loop, ca, gw.provider_port, endpoint)
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    submit(gw)
    wait_until(lambda: provider.received, timeout=10)
    time.sleep(2.2)  # the first token has ended; its connection was closed meanwhile
    submit(gw, (OTHER_PATIENT,))
    wait_until(lambda: len(provider.received) == 2, timeout=10)
    wait_queue_empty(gw)
    assert len(endpoint.grants) == 2
    assert sink(provider).refused == 0  # never offered the ended token


def test_a_token_the_provider_refuses_is_dropped_and_the_next_attempt_gets_another(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any],
        events: Events) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    endpoint = TokenEndpoint(loop).start()
    started.append(endpoint)
    upstreams(gw, ca, oauth_account(gw.provider_port, endpoint, client_secret(gw)))
    provider = oauth_provider(loop, ca, gw.provider_port, endpoint, google=True)
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    submit(gw)
    wait_until(lambda: provider.received, timeout=10)
    wait_until(lambda: provider.handler.open_now == 0, timeout=5)
    endpoint.revoke_tokens()  # the tenant revoked it (the account's password changed...)
    queue_id = submit(gw, (OTHER_PATIENT,))
    meta = wait_deferred(gw, queue_id)
    wait_until(lambda: len(provider.received) == 2, timeout=10)
    wait_queue_empty(gw)
    assert meta.last_error.startswith("451 4.7.0 The provider 127.0.0.1:")
    assert "refused the access token for account 'default' (535 5.7.8" in meta.last_error
    assert f"may send as {MAILBOX}" in meta.last_error
    assert len(endpoint.grants) == 2 and sink(provider).refused == 1
    assert named(events, "upstream.token_refused", account="default", reply="535 5.7.8")
    no_secret_in(events, endpoint)


def test_a_revoked_client_secret_defers_and_says_why_while_a_password_account_works(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any],
        events: Events) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    endpoint = TokenEndpoint(loop, secrets=set()).start()  # the secret was deleted in Entra
    started.append(endpoint)
    password_port = gw.provider_port + 1 if gw.provider_port < 65535 else gw.provider_port - 1
    (gw.folder / "upstream-password").write_text(PASSWORD + "\n")
    upstreams(gw, ca, oauth_account(gw.provider_port, endpoint, client_secret(gw),
                                    name="martin", senders=f'"{ADDRESS}"') +
              f'\n[[upstream]]\nname = "secretariat"\nhost = "{HOST}"\nport = {password_port}\n'
              f'security = "starttls"\nca_file = "provider-ca.pem"\n'
              f'username = "{PASSWORD_ACCOUNT}"\npassword_file = "upstream-password"\n')
    oauth = oauth_provider(loop, ca, gw.provider_port, endpoint)
    started.append(oauth)
    password = Provider(loop, tls(ca), password_port, users={PASSWORD_ACCOUNT: PASSWORD}).start()
    started.append(password)
    started.append(RunningApp(loop, gw).start())
    queue_id = submit(gw)
    submit(gw, sender=OTHER_ADDRESS, login=(OTHER_USER, OTHER_PASSWORD))
    wait_until(lambda: password.received, timeout=10)  # Dr Durand's mail goes meanwhile
    meta = wait_deferred(gw, queue_id)
    stays(lambda: not oauth.received and oauth.handler.sessions == 0, 0.5)
    assert password.received[0].mail_from == OTHER_ADDRESS
    assert meta.last_error == (
        f"451 4.7.0 The token service 127.0.0.1:{endpoint.port} refused Pli's credentials "
        f"for account 'martin' (401 invalid_client); check the client secret (it expires: "
        f"a new one from Entra ID, Certificates & secrets)")
    refused = named(events, "upstream.token_refused", account="martin", status=401,
                    error="invalid_client")
    assert refused
    listed = subprocess.run([sys.executable, "-m", "gateway.cli", "queue", "list", "-c",
                             str(gw.config)], check=False, capture_output=True, text=True,
                            timeout=30).stdout
    assert "last answer: 451 4.7.0 The token service" in listed

    endpoint.secrets.add(CLIENT_SECRET)  # a new secret, put in client-secret: mail flows
    wait_until(lambda: oauth.received, timeout=10)
    wait_queue_empty(gw)
    assert oauth.received[0].mail_from == ADDRESS
    no_secret_in(events, endpoint)


def test_a_google_service_account_signs_its_assertion_for_the_mailbox(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any]) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    endpoint = TokenEndpoint(loop, flavour="google", service_key=key.public_key()).start()
    started.append(endpoint)
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    (gw.folder / "service-account.json").write_text(json.dumps({
        "type": "service_account", "client_email": SERVICE_ACCOUNT, "private_key": pem,
        "private_key_id": "a1b2c3", "token_uri": endpoint.url}))
    upstreams(gw, ca, oauth_account(gw.provider_port, endpoint,
                                    'provider = "google"\n'
                                    'service_account_file = "service-account.json"\n'))
    provider = oauth_provider(loop, ca, gw.provider_port, endpoint, google=True)
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    submit(gw)
    wait_until(lambda: provider.received, timeout=10)
    wait_queue_empty(gw)
    assert endpoint.refusals == [] and len(endpoint.grants) == 1
    assert sink(provider).logins == [MAILBOX]


def self_signed() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """An application certificate as one makes it for Entra ID (RSA, self-signed)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pli, Cabinet Martin")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
                   .sign(key, hashes.SHA256()))
    return certificate, key


def pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def test_an_entra_application_certificate_instead_of_a_secret(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any]) -> None:
    certificate, key = self_signed()
    endpoint = TokenEndpoint(loop, secrets=set(), certificate=certificate).start()
    started.append(endpoint)
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    (gw.folder / "entra.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (gw.folder / "entra-key.pem").write_bytes(pem_key(key))
    upstreams(gw, ca, oauth_account(
        gw.provider_port, endpoint,
        f'provider = "microsoft365"\nclient_id = "{CLIENT_ID}"\n'
        f'certificate_file = "entra.pem"\nprivate_key_file = "entra-key.pem"\n'))
    provider = oauth_provider(loop, ca, gw.provider_port, endpoint)
    started.append(provider)
    started.append(RunningApp(loop, gw).start())
    submit(gw)
    wait_until(lambda: provider.received, timeout=10)
    wait_queue_empty(gw)
    assert endpoint.refusals == [] and "client_secret" not in endpoint.grants[0]
    assert endpoint.grants[0]["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")


def check_upstream(gw: Gateway) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check", "--upstream", "-c",
                           str(gw.config)], check=False, capture_output=True, text=True,
                          timeout=60)


def test_check_upstream_gets_a_token_and_logs_in_without_sending_anything(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any]) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    endpoint = TokenEndpoint(loop).start()
    started.append(endpoint)
    upstreams(gw, ca, oauth_account(gw.provider_port, endpoint, client_secret(gw)))
    provider = oauth_provider(loop, ca, gw.provider_port, endpoint)
    started.append(provider)
    done = check_upstream(gw)
    assert done.returncode == 0, done.stderr
    assert (f"upstream 'default' 127.0.0.1:{gw.provider_port} (starttls, xoauth2 as {MAILBOX}): "
            f"token obtained (valid 60 min); connected, STARTTLS, logged in: OK") in done.stdout
    assert sink(provider).logins == [MAILBOX] and provider.handler.sessions == 1
    assert provider.received == [] and provider.handler.mail_replies == []
    assert CLIENT_SECRET not in done.stdout + done.stderr
    assert not any(token in done.stdout + done.stderr for token in endpoint.tokens)

    endpoint.secrets.clear()  # the secret expired
    done = check_upstream(gw)
    assert done.returncode == 1
    assert "FAILED: 451 4.7.0 The token service" in done.stderr
    assert "(401 invalid_client); check the client secret" in done.stderr
    assert provider.handler.sessions == 1  # no connection without a token


def test_check_reports_an_oauth_secret_it_cannot_read_or_a_key_that_does_not_fit(
        tmp_path: Path, loop: LoopThread, ca: trustme.CA, started: list[Any]) -> None:
    gw = make_gateway(tmp_path / "pli", upstream_security="starttls")
    endpoint = TokenEndpoint(loop)
    upstreams(gw, ca, oauth_account(gw.provider_port, endpoint, client_secret(gw)))
    (gw.folder / "client-secret").unlink()
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "check", "-c", str(gw.config)],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "upstream 'default': cannot read the client secret from" in done.stderr

    certificate, _ = self_signed()
    _, other_key = self_signed()
    (gw.folder / "entra.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (gw.folder / "entra-key.pem").write_bytes(pem_key(other_key))
    upstreams(gw, ca, oauth_account(
        gw.provider_port, endpoint,
        f'provider = "microsoft365"\nclient_id = "{CLIENT_ID}"\n'
        f'certificate_file = "entra.pem"\nprivate_key_file = "entra-key.pem"\n'))
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "check", "-c", str(gw.config)],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "the private key does not go with the certificate" in done.stderr


def test_smtp_gmail_com_is_refused_for_a_password_but_taken_for_a_workspace_service_account(
        tmp_path: Path, ca: trustme.CA) -> None:
    gw = make_gateway(tmp_path / "pli")
    (gw.folder / "sa.json").write_text("{}")
    check = [sys.executable, "-m", "gateway.cli", "check", "-c", str(gw.config)]
    upstreams(gw, ca, '[[upstream]]\nhost = "smtp.gmail.com"\n')
    done = subprocess.run(check, check=False, capture_output=True, text=True, timeout=30)
    assert "consumer mail provider" in done.stderr
    upstreams(gw, ca, f'[[upstream]]\nhost = "smtp.gmail.com"\nusername = "{MAILBOX}"\n'
                      'auth = "xoauth2"\n\n[upstream.oauth]\nprovider = "google"\n'
                      'service_account_file = "sa.json"\n')
    done = subprocess.run(check, check=False, capture_output=True, text=True, timeout=30)
    assert "consumer mail provider" not in done.stderr
    assert "the service account key has no client_email or private_key" in done.stderr
