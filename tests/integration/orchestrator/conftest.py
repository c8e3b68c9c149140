"""The shared per-test database (every migration applied) plus a stand-in outbox table, and
the orchestrator on PostgreSQL stores that the tests build around their own outbox."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from relance_orchestrator.adapters.postgres_shops import FixedShops
from relance_orchestrator.adapters.postgres_timers import (
    PostgresContactStore,
    PostgresJournal,
    PostgresTimerStore,
)
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.ports import ShopDirectory
from relance_orchestrator.services import Orchestrator

OrchestratorOn = Callable[..., Orchestrator]


@pytest.fixture
def orchestrator_on() -> OrchestratorOn:
    """`orchestrator_on(outbox, shops=...)`: the shipped plans on the PostgreSQL stores;
    shops default to a fixed average basket of 50."""

    def build(outbox: Any, shops: ShopDirectory | None = None) -> Orchestrator:
        return Orchestrator(
            engine=Engine(load_plans()),
            contacts=PostgresContactStore(),
            timers=PostgresTimerStore(),
            journal=PostgresJournal(),
            outbox=outbox,
            shops=shops or FixedShops(average_basket=Decimal(50)),
        )

    return build


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
