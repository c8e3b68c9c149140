"""Signed, URL-safe tokens for tracking pixels, click links, unsubscribe and survey links.

Format: `<kid>.<base64url(json claims)>.<base64url(hmac-sha256)>`. The key id lets keys
rotate: the newest key signs, every configured key verifies. Tokens carry their own
purpose, so a click token can never be replayed as an unsubscribe token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from relance_runtime.errors import RelanceError


class InvalidToken(RelanceError):
    """Malformed, tampered, signed by an unknown key, or minted for another purpose."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """`keys` maps key id -> secret; `current` names the key that signs new tokens."""

    MAX_TOKEN_LENGTH = 4096

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"current key id {current!r} is not among the keys")
        for kid, secret in keys.items():
            if not kid.isalnum() or len(secret) < 16:
                raise ValueError("key ids are alphanumeric and secrets at least 16 bytes")
        self._keys = dict(keys)
        self._current = current

    @classmethod
    def from_setting(cls, value: str) -> TokenSigner:
        """Parse `kid1:secret1,kid2:secret2`; the first key signs."""
        pairs = [item.split(":", 1) for item in value.split(",") if item.strip()]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError("token keys look like 'k1:secret1,k0:oldsecret'")
        keys = {kid.strip(): secret.strip().encode() for kid, secret in pairs}
        return cls(keys, pairs[0][0].strip())

    def mint(self, purpose: str, claims: Mapping[str, Any]) -> str:
        body = _b64(orjson.dumps({"p": purpose, **claims}, option=orjson.OPT_SORT_KEYS))
        return f"{self._current}.{body}.{self._sign(self._current, body)}"

    def verify(self, purpose: str, token: str) -> dict[str, Any]:
        if len(token) > self.MAX_TOKEN_LENGTH:
            raise InvalidToken("token too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("malformed token")
        kid, body, signature = parts
        if kid not in self._keys:
            raise InvalidToken("unknown key id")
        if not hmac.compare_digest(signature, self._sign(kid, body)):
            raise InvalidToken("bad signature")
        try:
            claims = orjson.loads(_unb64(body))
        except (ValueError, orjson.JSONDecodeError):
            raise InvalidToken("malformed token body") from None
        if not isinstance(claims, dict) or claims.pop("p", None) != purpose:
            raise InvalidToken("token minted for another purpose")
        return claims

    def _sign(self, kid: str, body: str) -> str:
        mac = hmac.new(self._keys[kid], body.encode(), hashlib.sha256).digest()
        return _b64(mac[:20])
