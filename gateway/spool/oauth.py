"""Access tokens for the accounts that log in with SASL XOAUTH2 (Microsoft 365, Google).

Microsoft 365: the client credentials grant of an Entra ID application, authenticated by
its client secret or by an assertion signed with its certificate's key (PS256, the
certificate named by its SHA-256 thumbprint); scope
``https://outlook.office365.com/.default``. Google Workspace: a service account with
domain-wide delegation signs an assertion (RS256) naming the mailbox as ``sub``; scope
``https://mail.google.com/``. Either way the token is for the mailbox in ``username``.

A token is kept in memory only, shared by the account's connections, and fetched again
before it expires (or at once after the provider refused it). It is never written to a
file or a log: the log says ``upstream.token_refused`` with the account, the HTTP status
and the OAuth error code, nothing else. Every failure is a :class:`TemporaryError`: the
mail waits, with a sentence saying what to check, and bounces only after its lifetime.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.config import OAuth, Upstream
from gateway.errors import ConfigError
from gateway.logs import get_logger
from gateway.spool.outcomes import TemporaryError

log = get_logger("pli.delivery")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


@dataclass(frozen=True)
class Token:
    value: str
    obtained: float
    expires: float

    def fresh(self, now: float) -> bool:
        """Still good for a while: refreshed once four fifths of its life are spent (at
        most five minutes before it ends), so no connection logs in with a dying one."""
        margin = min(300.0, (self.expires - self.obtained) / 5)
        return now < self.expires - margin


class Tokens:
    """One account's token: fetched when needed, kept while fresh, one fetch at a time."""

    def __init__(self, account: Upstream, timeout: float,
                 clock: Callable[[], float] = time.time) -> None:
        assert account.oauth is not None
        self.account = account
        self.oauth: OAuth = account.oauth
        self.timeout = timeout
        self.clock = clock
        self._token: Token | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Token:
        async with self._lock:
            token = self._token
            if token is None or not token.fresh(self.clock()):
                token = self._token = await self._fetch()
            return token

    def refused(self, token: Token) -> None:
        """The provider refused it: the next connection asks for a new one."""
        if self._token is token:
            self._token = None

    async def _fetch(self) -> Token:
        account, oauth = self.account, self.oauth
        try:
            url, form = request(account, oauth, self.clock())
        except ConfigError as exc:
            raise TemporaryError(f"451 4.7.0 {exc}") from None
        where = url.split("://", 1)[-1].split("/", 1)[0]
        started = self.clock()
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.post(url, data=form, headers={"Accept": "application/json"}) as reply:
                status = reply.status
                body = await reply.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TemporaryError(f"451 4.4.1 Cannot reach the token service {where} for "
                                 f"account {account.name!r} ({type(exc).__name__})") from None
        answer = _json(body)
        if status != 200:
            code = str(answer.get("error", ""))
            code = code if _ERROR_CODE.match(code) else "no error code"
            if status in (400, 401, 403):
                log.warning("upstream.token_refused", account=account.name, status=status,
                            error=code)
                raise TemporaryError(
                    f"451 4.7.0 The token service {where} refused Pli's credentials for "
                    f"account {account.name!r} ({status} {code}); {_what_to_check(oauth)}")
            raise TemporaryError(f"451 4.4.1 The token service {where} answered {status} for "
                                 f"account {account.name!r}; Pli tries again later")
        value = answer.get("access_token")
        lifetime = answer.get("expires_in", 3600)
        if not isinstance(value, str) or not value or not _is_number(lifetime):
            raise TemporaryError(f"451 4.4.1 The token service {where} gave no usable token "
                                 f"for account {account.name!r}")
        return Token(value, started, started + float(lifetime))


def request(account: Upstream, oauth: OAuth, now: float) -> tuple[str, dict[str, str]]:
    """The token endpoint and the form to post to it; raises ConfigError when a secret
    cannot be read or used."""
    url, scope = oauth.default_token_url(), oauth.default_scope()
    if oauth.provider == "google":
        key = service_account(account)
        url = oauth.token_url or str(key.get("token_uri") or url)
        claims = {"iss": key["client_email"], "sub": account.username, "scope": scope,
                  "aud": url, "iat": int(now), "exp": int(now) + 3600}
        header = {"alg": "RS256", "typ": "JWT"}
        if key.get("private_key_id"):
            header["kid"] = str(key["private_key_id"])
        private = _private_key(account, str(key["private_key"]), "the service account's key")
        return url, {"grant_type": JWT_BEARER_GRANT,
                     "assertion": jwt(header, claims, private, "RS256")}
    assert oauth.client_id is not None
    form = {"grant_type": "client_credentials", "client_id": oauth.client_id, "scope": scope}
    if oauth.certificate_file is not None:
        certificate, private = application_certificate(account)
        thumbprint = _b64url(certificate.fingerprint(hashes.SHA256()))
        claims = {"aud": url, "iss": oauth.client_id, "sub": oauth.client_id,
                  "jti": str(uuid.uuid4()), "nbf": int(now), "iat": int(now),
                  "exp": int(now) + 600}
        form["client_assertion_type"] = ASSERTION_TYPE
        form["client_assertion"] = jwt({"alg": "PS256", "typ": "JWT", "x5t#S256": thumbprint},
                                       claims, private, "PS256")
    else:
        secret = account.secret("the client secret", oauth.client_secret_file,
                                oauth.client_secret_credential)
        if not secret:
            raise ConfigError(f"upstream {account.name!r}: the client secret is empty")
        form["client_secret"] = secret
    return url, form


def service_account(account: Upstream) -> dict[str, Any]:
    """The Google service account's JSON key, checked for what the assertion needs."""
    assert account.oauth is not None
    text = account.secret("the service account key", account.oauth.service_account_file,
                          account.oauth.service_account_credential) or ""
    try:
        key = json.loads(text)
    except ValueError:
        raise ConfigError(f"upstream {account.name!r}: the service account key is not the "
                          "JSON file Google gives (Keys, Add key, JSON)") from None
    if not isinstance(key, dict) or not all(isinstance(key.get(k), str) and key[k]
                                            for k in ("client_email", "private_key")):
        raise ConfigError(f"upstream {account.name!r}: the service account key has no "
                          "client_email or private_key")
    return key


def application_certificate(
        account: Upstream) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """The Entra ID application's certificate and its private key (RSA, as Entra wants)."""
    oauth = account.oauth
    assert oauth is not None and oauth.certificate_file is not None
    try:
        certificate = x509.load_pem_x509_certificate(oauth.certificate_file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"upstream {account.name!r}: cannot read the certificate "
                          f"{oauth.certificate_file}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"upstream {account.name!r}: {oauth.certificate_file} is not a PEM "
                          "certificate") from None
    pem = account.secret("the certificate's private key", oauth.private_key_file,
                         oauth.private_key_credential) or ""
    private = _private_key(account, pem, "the certificate's private key")
    public = certificate.public_key()
    if not (isinstance(public, rsa.RSAPublicKey)
            and public.public_numbers() == private.public_key().public_numbers()):
        raise ConfigError(f"upstream {account.name!r}: the private key does not go with "
                          f"the certificate {oauth.certificate_file}")
    return certificate, private


def _private_key(account: Upstream, pem: str, what: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"upstream {account.name!r}: {what} is not an unencrypted PEM "
                          "private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"upstream {account.name!r}: {what} must be an RSA key")
    return key


def jwt(header: dict[str, Any], claims: dict[str, Any], key: rsa.RSAPrivateKey,
        alg: str) -> str:
    """A signed JSON Web Token (RFC 7519), RS256 or PS256 (RFC 7518 §3.3, §3.5)."""
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    if alg == "PS256":
        pad: padding.AsymmetricPadding = padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                     salt_length=padding.PSS.DIGEST_LENGTH)
    else:
        pad = padding.PKCS1v15()
    signature = key.sign(signing_input.encode(), pad, hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def credential_problems(account: Upstream) -> list[str]:
    """What keeps Pli from asking for a token, without asking (for `pli check`)."""
    if account.oauth is None:
        return []
    try:
        request(account, account.oauth, time.time())
    except ConfigError as exc:
        return [str(exc)]
    except KeyError as exc:
        return [f"upstream {account.name!r}: the service account key has no {exc}"]
    return []


def _what_to_check(oauth: OAuth) -> str:
    if oauth.provider == "google":
        return ("check the service account's key and that the Workspace admin console "
                "delegates https://mail.google.com/ to its client id (domain-wide delegation)")
    if oauth.certificate_file is not None:
        return "check that the application in Entra ID still has this certificate"
    return ("check the client secret (it expires: a new one from Entra ID, Certificates & "
            "secrets)")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
