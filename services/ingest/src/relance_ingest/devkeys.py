"""Dev keys for the embedded default (`relance up` with no key configured anywhere)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import asyncpg

from relance_runtime.auth import (
    DEFAULT_SHOP,
    KEY_KINDS,
    PostgresKeyStore,
    generate_key,
    parse_keys,
)
from relance_runtime.platform import Platform

DEV_KEYS_FILE = "dev-keys.txt"


async def ensure_dev_keys_file(
    platform_or_pool: Platform | asyncpg.Pool[Any],
    data_dir: Path,
    *,
    write_keys: str = "",
    admin_keys: str = "",
) -> dict[str, str]:
    """A write and an admin key for shop "default" when no key is configured at all.

    "No key" means none in the settings (a `Platform`'s own, else `write_keys` /
    `admin_keys`) and none in `ingest_api_keys`. The digests go to the database, the plain
    keys to `<data_dir>/dev-keys.txt` (mode 0600). Returns `{"write": ..., "admin": ...}`
    to print: freshly created keys, or on later starts the ones of that file still active;
    `{}` when keys are configured some other way.
    """
    if isinstance(platform_or_pool, Platform):
        pool = platform_or_pool.pool
        write_keys = write_keys or platform_or_pool.settings.write_keys
        admin_keys = admin_keys or platform_or_pool.settings.admin_keys
    else:
        pool = platform_or_pool
    if parse_keys(write_keys, "write") or parse_keys(admin_keys, "admin"):
        return {}
    path = data_dir / DEV_KEYS_FILE
    async with pool.acquire() as conn, conn.transaction():
        # Two processes starting on one database at once must not both create keys.
        await conn.execute("lock table ingest_api_keys in share row exclusive mode")
        store = PostgresKeyStore(conn)
        if await conn.fetchval("select exists (select 1 from ingest_api_keys)"):
            return await _still_active(store, path)
        created = {kind: generate_key(kind) for kind in KEY_KINDS}
        for kind in KEY_KINDS:
            await store.add(DEFAULT_SHOP, kind, created[kind], label="dev")
        # Written before the commit: a file that cannot be written rolls the keys back.
        _write_private(
            path,
            f"# Relance dev keys, shop {DEFAULT_SHOP!r} (HTTP Basic, the key as username)\n"
            + "".join(f"{kind}={created[kind]}\n" for kind in KEY_KINDS),
        )
    return {str(kind): key for kind, key in created.items()}


async def _still_active(store: PostgresKeyStore, path: Path) -> dict[str, str]:
    lines = _read_lines(path)
    found: dict[str, str] = {}
    for line in lines:
        kind, sep, key = line.partition("=")
        for known in KEY_KINDS:
            if sep and kind == known and await store.shop_for(known, key) is not None:
                found[known] = key
    return found


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
