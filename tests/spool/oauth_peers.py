"""The peers of an OAuth2 login, on loopback: a token endpoint (aiohttp) that checks the
grant as Entra ID or Google would and issues short-lived tokens, and a provider (aiosmtpd)
that takes AUTH XOAUTH2 only, with a valid token that has not expired."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import MISSING, AuthResult
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support import HOST, LoopThread, SinkHandler, free_port

CLIENT_ID = "3f1c9a52-7d1e-4a8b-9c55-0e2b7a61d4f0"
CLIENT_SECRET = "Pq8~client.secret-for-the-test"
MAILBOX = "cabinet@cabinet-martin.fr"
SERVICE_ACCOUNT = "pli-relay@cabinet-martin.iam.gserviceaccount.com"
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_SCOPE = "https://mail.google.com/"


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Issued:
    mailbox: str
    expires: float


@dataclass
class TokenEndpoint:
    """Entra ID's token endpoint (``flavour="microsoft"``: client credentials, with a
    client secret or a certificate's assertion) or Google's (``"google"``: a service
    account's signed assertion)."""

    loop: LoopThread
    flavour: str = "microsoft"
    lifetime: int = 3600
    secrets: set[str] = field(default_factory=lambda: {CLIENT_SECRET})
    certificate: x509.Certificate | None = None
    service_key: rsa.RSAPublicKey | None = None
    tokens: dict[str, Issued] = field(default_factory=dict)
    grants: list[dict[str, str]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _runner: Any = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/tenant/oauth2/v2.0/token"

    def start(self) -> TokenEndpoint:
        app = web.Application()
        app.router.add_post("/tenant/oauth2/v2.0/token", self._token)

        async def go() -> Any:
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, HOST, self.port).start()
            return runner
        self._runner = self.loop.run(go())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self.loop.run(self._runner.cleanup())
            self._runner = None

    def valid(self, token: str, mailbox: str) -> bool:
        issued = self.tokens.get(token)
        return issued is not None and issued.mailbox == mailbox and time.time() < issued.expires

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        try:
            mailbox = (self._google(form) if self.flavour == "google"
                       else self._microsoft(form))
        except ValueError as exc:
            self.refusals.append(str(exc))
            status, error = ((400, "invalid_grant") if self.flavour == "google"
                             else (401, "invalid_client"))
            return web.json_response({"error": error, "error_description": str(exc)},
                                     status=status)
        self.grants.append(form)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = Issued(mailbox, time.time() + self.lifetime)
        return web.json_response({"token_type": "Bearer", "expires_in": self.lifetime,
                                  "access_token": token})

    def _microsoft(self, form: dict[str, str]) -> str:
        if form.get("grant_type") != "client_credentials":
            raise ValueError("grant_type")
        if form.get("client_id") != CLIENT_ID or form.get("scope") != MICROSOFT_SCOPE:
            raise ValueError("client_id or scope")
        if "client_assertion" in form:
            if self.certificate is None:
                raise ValueError("no certificate registered")
            header, claims = self._verify(form["client_assertion"], "PS256",
                                          self.certificate.public_key())  # type: ignore[arg-type]
            thumbprint = base64.urlsafe_b64encode(
                self.certificate.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
            if header.get("x5t#S256") != thumbprint:
                raise ValueError("x5t#S256")
            if not (claims.get("iss") == claims.get("sub") == CLIENT_ID
                    and claims.get("aud") == self.url and claims.get("jti")):
                raise ValueError("claims")
        elif form.get("client_secret") not in self.secrets:
            raise ValueError("client secret")
        return MAILBOX  # the application may send as this mailbox

    def _google(self, form: dict[str, str]) -> str:
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            raise ValueError("grant_type")
        assert self.service_key is not None
        _, claims = self._verify(form.get("assertion", ""), "RS256", self.service_key)
        if claims.get("iss") != SERVICE_ACCOUNT or claims.get("scope") != GOOGLE_SCOPE:
            raise ValueError("iss or scope")
        if claims.get("aud") != self.url or claims["exp"] - claims["iat"] > 3600:
            raise ValueError("aud or lifetime")
        return str(claims["sub"])  # domain-wide delegation: the mailbox it names

    @staticmethod
    def _verify(assertion: str, alg: str,
                key: rsa.RSAPublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            head, body, signature = assertion.split(".")
            header, claims = json.loads(_unb64url(head)), json.loads(_unb64url(body))
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                            salt_length=padding.PSS.DIGEST_LENGTH)
                if alg == "PS256" else padding.PKCS1v15())
            key.verify(_unb64url(signature), f"{head}.{body}".encode(), pad, hashes.SHA256())
        except (ValueError, binascii.Error, InvalidSignature) as exc:
            raise ValueError(f"assertion: {type(exc).__name__}") from None
        if header.get("alg") != alg or not claims.get("exp") or claims["exp"] < time.time():
            raise ValueError("assertion header or expiry")
        return header, claims


@dataclass
class XOAuthSink(SinkHandler):
    """A provider that takes AUTH XOAUTH2 only, with a token its endpoint issued for the
    mailbox named, still valid. Refuses as Microsoft does (535 at once) or as Google does
    (a 334 challenge with the error in JSON, then 535)."""

    endpoint: TokenEndpoint | None = None
    google: bool = False
    logins: list[str] = field(default_factory=list)
    refused: int = 0

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        if len(args) > 1:
            blob = base64.b64decode(args[1])
        else:
            answer = await server.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            blob = answer
        fields = dict(part.split("=", 1) for part in blob.decode().split("\x01") if part)
        user, token = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        assert self.endpoint is not None
        if self.endpoint.valid(token, user):
            self.logins.append(user)
            return AuthResult(success=True, auth_data=user)
        self.refused += 1
        if self.google:
            error = base64.b64encode(json.dumps(
                {"status": "401", "schemes": "bearer", "scope": GOOGLE_SCOPE}).encode())
            await server.challenge_auth(error, encode_to_b64=False)
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 Username and Password not accepted")
        return AuthResult(success=False, handled=False,
                          message="535 5.7.3 Authentication unsuccessful")


XOAUTH2_ONLY = {"auth_required": True, "auth_require_tls": True,
                "auth_exclude_mechanism": ["LOGIN", "PLAIN"]}
