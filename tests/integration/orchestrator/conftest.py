"""A real PostgreSQL (pgserver) per session, a fresh migrated database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pgserver
import pytest

MIGRATIONS = (
    Path(__file__).resolve().parents[3]
    / "services/orchestrator/src/relance_orchestrator/migrations"
)


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv = pgserver.get_server(tmp_path_factory.mktemp("orchestrator-pg"), cleanup_mode="stop")
    yield srv.get_uri()


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(pg_dsn, name)
    conn = await asyncpg.connect(dsn)
    for path in sorted(MIGRATIONS.glob("*.sql")):
        async with conn.transaction():
            await conn.execute(path.read_text())
    # the test's stand-in for the runtime outbox: a real table in the same transaction
    await conn.execute(
        "CREATE TABLE test_outbox (event_id uuid PRIMARY KEY, message_id text, body jsonb)"
    )
    await conn.close()
    try:
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
