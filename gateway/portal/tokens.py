"""Proof that a browser gave a link's right access code, kept in a cookie for a while.

A token is the link id and an expiry time, signed with HMAC-SHA256 under a key drawn when
the portal starts (so a restart simply asks for the code again). It lets the page fetch
the manifest and the files without sending the code again, and it is useless for any
other link. The cookie is HttpOnly, SameSite=Strict, and Secure when the portal's public
address is https.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

DEFAULT_LIFETIME = 900.0
COOKIE_PREFIX = "pli_"


class AccessTokens:
    def __init__(
        self,
        lifetime: float = DEFAULT_LIFETIME,
        *,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime = lifetime
        self._key = key or secrets.token_bytes(32)
        self._clock = clock

    @staticmethod
    def cookie_name(link_id: str) -> str:
        return COOKIE_PREFIX + link_id

    def issue(self, link_id: str) -> str:
        expires = int(self._clock() + self.lifetime)
        return f"{expires}.{self._sign(link_id, expires)}"

    def valid(self, link_id: str, token: str | None) -> bool:
        if not token:
            return False
        expires_text, _, signature = token.partition(".")
        if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 12:
            return False
        expires = int(expires_text)
        if expires <= self._clock():
            return False
        return hmac.compare_digest(signature.encode("ascii", "replace"),
                                   self._sign(link_id, expires).encode("ascii"))

    def _sign(self, link_id: str, expires: int) -> str:
        mac = hmac.new(self._key, f"pli-portal-v1\0{link_id}\0{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")
