"""The shop directory on real PostgreSQL: the orders the orchestrator saw (one statement per
batch, each order once) are its average-basket fallback."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from relance_events import Event
from relance_orchestrator.adapters.postgres_shops import PostgresShopDirectory
from relance_orchestrator.ports import SeenOrder
from relance_orchestrator.services import Orchestrator

from .support import order_event

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


class KeptOutbox:
    def __init__(self) -> None:
        self.requested: list[Event[Any]] = []

    async def add(self, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> None:
        self.requested.extend(events)


async def test_orders_seen_keeps_each_order_once(db: str) -> None:
    shops = PostgresShopDirectory(ttl=timedelta(0))
    conn = await asyncpg.connect(db)
    try:
        await shops.orders_seen(
            conn,
            [
                SeenOrder("shop", "o-2", Decimal(30), T0),
                SeenOrder("shop", "o-1", Decimal(10), T0),
                SeenOrder("shop", "o-2", Decimal(30), T0),  # twice in one call
            ],
        )
        await shops.orders_seen(conn, [SeenOrder("shop", "o-1", Decimal(10), T0)])  # again
        await shops.orders_seen(conn, [])
        rows = await conn.fetch("SELECT order_id, total FROM orchestrator_orders ORDER BY 1")
        facts = await shops.shop_facts(conn, "shop", T0 + timedelta(days=1))
    finally:
        await conn.close()
    assert [(r["order_id"], r["total"]) for r in rows] == [("o-1", 10), ("o-2", 30)]
    assert facts.average_basket == Decimal(20)


async def test_a_batchs_orders_are_seen_before_its_decisions(
    db: str, orchestrator_on: Callable[..., Orchestrator]
) -> None:
    """Two first orders and a replay in one batch: each order counted once, and the first
    decision of the batch already reads an average basket that includes them."""
    outbox = KeptOutbox()
    orchestrator = orchestrator_on(outbox, shops=PostgresShopDirectory(ttl=timedelta(0)))
    first = order_event("u-1", "o-1", T0, Decimal(100))
    conn = await asyncpg.connect(db)
    try:
        async with conn.transaction():
            await orchestrator.handle_events(conn, [first], T0)
        async with conn.transaction():
            batch = [
                order_event("u-2", "o-2", T0, Decimal(20)),
                first,
                order_event("u-3", "o-3", T0, Decimal(80)),
            ]
            await orchestrator.handle_events(conn, batch, T0)
        rows = await conn.fetch("SELECT order_id FROM orchestrator_orders ORDER BY 1")
    finally:
        await conn.close()
    assert [r["order_id"] for r in rows] == ["o-1", "o-2", "o-3"]
    welcomes = {
        e.contact_key: e.payload.variant
        for e in outbox.requested
        if (e.payload.plan, e.payload.step) == ("welcome_pack", "welcome")
    }
    # Against the average of all three (66.67), not o-1's alone (100, which 80 is below).
    assert welcomes == {"u-1": "standard", "u-2": "standard", "u-3": "vip"}
