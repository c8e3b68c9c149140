"""PostgreSQL: the connection pool, the embedded server, and migrations."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from relance_runtime.errors import ConfigError

log = logging.getLogger(__name__)

# What repositories accept: a plain connection or one borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

# Every package that owns tables, in dependency order; each ships `migrations/*.sql`.
MIGRATION_PACKAGES: tuple[str, ...] = (
    "relance_runtime",
    "relance_ingest",
    "relance_segmentation",
    "relance_orchestrator",
    "relance_sender",
    "relance_feedback",
)

_MIGRATION_LOCK = 0x52454C414E4345  # "RELANCE": one migrator at a time across processes


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the pgserver PostgreSQL 16 under `data_dir`; return its DSN."""
    import pgserver  # imported lazily: only the embedded mode needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    get_server = pgserver.get_server  # type: ignore[attr-defined]
    # "stop": the server stops when the last process using this data directory exits,
    # so `relance up` leaves nothing running behind it (the data stays on disk).
    server = get_server(str(data_dir.resolve()), cleanup_mode="stop")
    return str(server.get_uri())


def migrations_of(package: str) -> list[tuple[str, str]]:
    """(version, sql) pairs of a package, in order; a package without migrations has none."""
    try:
        folder = resources.files(package).joinpath("migrations")
    except ModuleNotFoundError:
        return []
    if not folder.is_dir():
        return []
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [(entry.name.removesuffix(".sql"), entry.read_text()) for entry in files]


async def migrate(conn: Connection, packages: Sequence[str] = MIGRATION_PACKAGES) -> list[str]:
    """Apply every pending migration, each in its own transaction; return what was applied.

    A migration already applied with different content is refused: migrations are append-only.
    """
    applied: list[str] = []
    # Lock first: CREATE TABLE IF NOT EXISTS is not safe against a concurrent creator.
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   package text NOT NULL, version text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (package, version))"""
        )
        done = {
            (r["package"], r["version"]): r["checksum"]
            for r in await conn.fetch("SELECT package, version, checksum FROM schema_migrations")
        }
        for package in packages:
            for version, sql in migrations_of(package):
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                previous = done.get((package, version))
                if previous is not None:
                    if previous != checksum:
                        raise ConfigError(
                            f"migration {package}/{version} changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (package, version, checksum) "
                        "VALUES ($1, $2, $3)",
                        package,
                        version,
                        checksum,
                    )
                applied.append(f"{package}/{version}")
                log.info("migration applied", extra={"migration": f"{package}/{version}"})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a released connection needs beyond asyncpg's own cleanup (listeners dropped,
    an open transaction rolled back): nothing. Sessions here keep no state past a
    transaction (`SET LOCAL`, transaction-level advisory locks); what does keep state (the
    migration lock, LISTEN) undoes it itself. asyncpg's default reset query would cost a
    round trip on every release, on the way of every batch and request."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool: Any = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=60, reset=_keep_session
    )
    return pool  # type: ignore[no-any-return]
