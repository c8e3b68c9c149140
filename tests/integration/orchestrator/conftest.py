"""The shared per-test database (every migration applied) plus a stand-in outbox table, and
the orchestrator on PostgreSQL stores that the tests build around their own outbox."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from relance_orchestrator.services import Orchestrator

from .support import postgres_orchestrator

OrchestratorOn = Callable[..., Orchestrator]


@pytest.fixture
def orchestrator_on() -> OrchestratorOn:
    """`orchestrator_on(outbox, shops=...)`: see `support.postgres_orchestrator`."""
    return postgres_orchestrator


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
