"""The orchestrator on its PostgreSQL stores, and order events to feed it: shared by the
orchestrator's integration tests and the operator command tests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from relance_events import Event, new_event
from relance_events.payloads import OrderCompleted
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


def postgres_orchestrator(outbox: Any, shops: ShopDirectory | None = None) -> Orchestrator:
    """The shipped plans on the PostgreSQL stores; shops default to a fixed average basket
    of 50."""
    return Orchestrator(
        engine=Engine(load_plans()),
        contacts=PostgresContactStore(),
        timers=PostgresTimerStore(),
        journal=PostgresJournal(),
        outbox=outbox,
        shops=shops or FixedShops(average_basket=Decimal(50)),
    )


def order_event(
    contact: str, order_id: str, at: datetime, total: Decimal = Decimal(40)
) -> Event[Any]:
    return new_event(
        OrderCompleted(order_id=order_id, total=total),
        shop_id="shop",
        contact_key=contact,
        source="test",
        occurred_at=at,
    )


async def handle(dsn: str, orch: Orchestrator, event: Event[Any], now: datetime) -> None:
    """One event in its own transaction, on its own connection (as the consumer does)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await orch.handle_event(conn, event, now)
    finally:
        await conn.close()
