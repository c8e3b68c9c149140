"""The shared per-test database (every migration applied) plus a stand-in outbox table."""

from __future__ import annotations

import asyncpg
import pytest


@pytest.fixture
async def db(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        # the test's stand-in for the runtime outbox: a real table in the same transaction
        await conn.execute(
            "CREATE TABLE test_outbox (event_id uuid PRIMARY KEY, message_id text, body jsonb)"
        )
    finally:
        await conn.close()
    return database_url
