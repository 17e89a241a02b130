"""Signed, short-lived tokens: proof of the access code, and grants of one download.

An access token is the link id and an expiry time, signed with HMAC-SHA256 under a key
drawn when the portal starts (so a restart simply asks for the code again), or read from
``[portal] key_file`` (or a systemd credential), the same for every instance behind one
load balancer, so that a token issued by one is accepted by the others. It lets the
page fetch the manifest and ask for downloads without sending the code again, and it is
useless for any other link. The cookie is HttpOnly, SameSite=Strict, and Secure when the
portal's public address is https.

A grant is given when a download of one document is counted: the link id, the document's
object id and an expiry time (10 minutes by default), signed under the same key with
another label, so neither kind of token passes for the other. A document's ciphertext is
served only under a grant for it, whole or by ranges: a dropped connection resumes under
the same grant without counting again, and nobody else (a link scanner, another browser)
holds one. The page keeps it in memory and sends it as ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

DEFAULT_LIFETIME = 900.0
DEFAULT_GRANT_LIFETIME = 600.0
COOKIE_PREFIX = "pli_"
MAX_EXPIRES_DIGITS = 12


class AccessTokens:
    def __init__(
        self,
        lifetime: float = DEFAULT_LIFETIME,
        *,
        grant_lifetime: float = DEFAULT_GRANT_LIFETIME,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime = lifetime
        self.grant_lifetime = grant_lifetime
        self._key = key or secrets.token_bytes(32)
        self._clock = clock

    @staticmethod
    def cookie_name(link_id: str) -> str:
        return COOKIE_PREFIX + link_id

    # -- the access code's proof ----------------------------------------------------------

    def issue(self, link_id: str) -> str:
        return self._issue(self.lifetime, "pli-portal-v1", link_id)

    def valid(self, link_id: str, token: str | None) -> bool:
        return self._valid(token, "pli-portal-v1", link_id)

    # -- grants of one download ---------------------------------------------------------

    def issue_grant(self, link_id: str, object_id: str) -> tuple[str, int]:
        """A grant for one document of one link, and the time it expires."""
        token = self._issue(self.grant_lifetime, "pli-portal-grant-v1", link_id, object_id)
        return token, int(token.partition(".")[0])

    def valid_grant(self, link_id: str, object_id: str, token: str | None) -> bool:
        return self._valid(token, "pli-portal-grant-v1", link_id, object_id)

    # -- both ---------------------------------------------------------------------------

    def _issue(self, lifetime: float, label: str, *subject: str) -> str:
        expires = int(self._clock() + lifetime)
        return f"{expires}.{self._sign(label, subject, expires)}"

    def _valid(self, token: str | None, label: str, *subject: str) -> bool:
        if not token:
            return False
        expires_text, _, signature = token.partition(".")
        if (not expires_text.isascii() or not expires_text.isdigit()
                or len(expires_text) > MAX_EXPIRES_DIGITS):
            return False
        expires = int(expires_text)
        if expires <= self._clock():
            return False
        return hmac.compare_digest(signature.encode("ascii", "replace"),
                                   self._sign(label, subject, expires).encode("ascii"))

    def _sign(self, label: str, subject: tuple[str, ...], expires: int) -> str:
        # Ids are base64url, so the NUL separators cannot be forged from inside them.
        message = "\0".join((label, *subject, str(expires))).encode()
        mac = hmac.new(self._key, message, hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")
