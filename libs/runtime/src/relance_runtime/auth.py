"""API keys: write keys send events, admin keys read and manage. The key names the shop.

Keys are high-entropy random strings (`generate_key`), so they are stored as a plain
SHA-256 digest: a slow password hash (bcrypt, argon2) only helps against guessing
low-entropy secrets, and would cost milliseconds on every ingest request. Several keys of
a kind may be active at once, which is how keys rotate: add the new one, move clients,
revoke the old one.

Transport is HTTP Basic auth with the key as the username and an empty password, as
Segment does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from relance_runtime.errors import ConfigError, RelanceError

KeyKind = Literal["write", "admin"]
KEY_KINDS: tuple[KeyKind, ...] = ("write", "admin")
DEFAULT_SHOP = "default"
MAX_KEY_LENGTH = 256


class AuthFailed(RelanceError):
    """No key, or a key unknown for the kind asked; answered as 401."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key(kind: KeyKind) -> str:
    """A new random key; the prefix only helps humans tell kinds apart."""
    return f"rl{kind[0]}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    shop_id: str
    kind: KeyKind
    key_hash: str


def parse_keys(value: str, kind: KeyKind) -> list[ApiKey]:
    """Parse `shop_a:key1,key2` (a key without `shop:` belongs to the shop "default")."""
    keys: list[ApiKey] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        shop_id, sep, key = item.partition(":")
        if not sep:
            shop_id, key = DEFAULT_SHOP, item
        shop_id, key = shop_id.strip(), key.strip()
        if not shop_id or not key:
            raise ConfigError(f"malformed {kind} key entry (expected 'shop_id:key' or 'key')")
        keys.append(ApiKey(shop_id, kind, hash_key(key)))
    return keys


class KeyStore(Protocol):
    async def shop_for(self, kind: KeyKind, key: str) -> str | None:
        """The shop a key of `kind` belongs to, or None if no such active key."""
        ...


class StaticKeyStore:
    """Keys from settings. Every lookup compares against every key in constant time."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._keys = tuple(keys)

    @classmethod
    def from_settings(cls, write_keys: str, admin_keys: str) -> StaticKeyStore:
        return cls([*parse_keys(write_keys, "write"), *parse_keys(admin_keys, "admin")])

    def __len__(self) -> int:
        return len(self._keys)

    async def shop_for(self, kind: KeyKind, key: str) -> str | None:
        digest = hash_key(key).encode()
        found: str | None = None
        for entry in self._keys:
            # No early exit: the time taken does not depend on which entry matched.
            if hmac.compare_digest(entry.key_hash.encode(), digest) and entry.kind == kind:
                found = entry.shop_id
        return found


class _Fetcher(Protocol):
    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> str: ...


class PostgresKeyStore:
    """Keys in `ingest_api_keys` (migration 0001 of ingest); `db` is a pool or a connection.

    The lookup is by the key's digest through a unique index: an attacker timing it learns
    about digests of their own guesses, not about stored keys.
    """

    def __init__(self, db: _Fetcher) -> None:
        self._db = db

    async def shop_for(self, kind: KeyKind, key: str) -> str | None:
        shop: str | None = await self._db.fetchval(
            "select shop_id from ingest_api_keys"
            " where key_hash = $1 and kind = $2 and revoked_at is null",
            hash_key(key),
            kind,
        )
        return shop

    async def add(self, shop_id: str, kind: KeyKind, key: str, label: str = "") -> None:
        await self._db.execute(
            "insert into ingest_api_keys (shop_id, kind, key_hash, label)"
            " values ($1, $2, $3, $4) on conflict (key_hash) do nothing",
            shop_id,
            kind,
            hash_key(key),
            label,
        )

    async def revoke(self, key: str) -> None:
        await self._db.execute(
            "update ingest_api_keys set revoked_at = now()"
            " where key_hash = $1 and revoked_at is null",
            hash_key(key),
        )


class ChainedKeyStore:
    """Ask each store in turn (settings first, then the database)."""

    def __init__(self, *stores: KeyStore) -> None:
        self._stores = stores

    async def shop_for(self, kind: KeyKind, key: str) -> str | None:
        for store in self._stores:
            shop = await store.shop_for(kind, key)
            if shop is not None:
                return shop
        return None


class CachedKeyStore:
    """Remembers answers for `ttl_s` so a hot ingest path does not query per request.

    A revoked key keeps working for at most `ttl_s`. Cache keys are digests, never keys.
    """

    def __init__(
        self,
        inner: KeyStore,
        *,
        ttl_s: float = 30.0,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl = ttl_s
        self._max = max_entries
        self._monotonic = monotonic
        self._cache: dict[tuple[KeyKind, str], tuple[float, str | None]] = {}

    async def shop_for(self, kind: KeyKind, key: str) -> str | None:
        now = self._monotonic()
        entry = (kind, hash_key(key))
        hit = self._cache.get(entry)
        if hit is not None and hit[0] > now:
            return hit[1]
        shop = await self._inner.shop_for(kind, key)
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[entry] = (now + self._ttl, shop)
        return shop


def parse_basic_auth(header: str | None) -> str | None:
    """The username of a Basic `Authorization` header (the key), or None."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username = decoded.partition(":")[0]
    if not username or len(username) > MAX_KEY_LENGTH:
        return None
    return username


async def authenticate(store: KeyStore, kind: KeyKind, authorization: str | None) -> str:
    """The shop of the request's key, or `AuthFailed`."""
    key = parse_basic_auth(authorization)
    if key is None:
        raise AuthFailed("missing or malformed Basic authorization (the key is the username)")
    shop = await store.shop_for(kind, key)
    if shop is None:
        raise AuthFailed(f"unknown {kind} key")
    return shop


def unauthorized(reason: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"field": "authorization", "reason": reason}]},
        status_code=401,
        headers={"WWW-Authenticate": 'Basic realm="relance"'},
    )


def require_key(store: KeyStore, kind: KeyKind) -> Callable[[Request], Awaitable[str]]:
    """A FastAPI dependency returning the shop id; needs `install_auth_handler(app)`."""

    async def shop_id(request: Request) -> str:
        return await authenticate(store, kind, request.headers.get("authorization"))

    return shop_id


async def auth_failed_handler(request: Request, exc: Exception) -> JSONResponse:
    return unauthorized(str(exc))


def install_auth_handler(app: FastAPI) -> None:
    """Answer `AuthFailed` as 401 `{"errors": [...]}` with `WWW-Authenticate: Basic`."""
    app.add_exception_handler(AuthFailed, auth_failed_handler)


@dataclass(frozen=True, slots=True)
class DevKeys:
    write_keys: str
    admin_keys: str
    created: dict[KeyKind, str]


def ensure_dev_keys(write_keys: str, admin_keys: str) -> DevKeys:
    """For the embedded default: a fresh key of each kind that has none configured.

    The caller prints `created` once; the keys live only in the returned settings values.
    """
    created: dict[KeyKind, str] = {}
    if not parse_keys(write_keys, "write"):
        created["write"] = generate_key("write")
        write_keys = f"{DEFAULT_SHOP}:{created['write']}"
    if not parse_keys(admin_keys, "admin"):
        created["admin"] = generate_key("admin")
        admin_keys = f"{DEFAULT_SHOP}:{created['admin']}"
    return DevKeys(write_keys, admin_keys, created)
