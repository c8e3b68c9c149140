"""Shop facts: the timezone from settings, the average basket from segmentation's
`segmentation_shop_stats` when it has one, else from the orders the orchestrator saw.

Figures are cached per shop for `ttl` so a batch of events costs no extra query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.ports import SeenOrder
from relance_runtime.db import Connection


@dataclass
class PostgresShopDirectory:
    timezone: str = "UTC"
    ttl: timedelta = timedelta(seconds=60)
    basket_window: timedelta = timedelta(days=365)
    _cache: dict[str, tuple[datetime, ShopFacts]] = field(default_factory=dict)

    async def shop_facts(self, conn: Connection, shop_id: str, now: datetime) -> ShopFacts:
        cached = self._cache.get(shop_id)
        if cached is not None and now - self.ttl < cached[0] <= now:
            return cached[1]
        basket = await self._segmentation_basket(conn, shop_id)
        if basket is None:
            basket = await conn.fetchval(
                """SELECT avg(total) FROM orchestrator_orders
                   WHERE shop_id = $1 AND ordered_at > $2""",
                shop_id,
                now - self.basket_window,
            )
        facts = ShopFacts(
            shop_id=shop_id,
            timezone=self.timezone,
            average_basket=None if basket is None else Decimal(basket).quantize(Decimal("0.0001")),
        )
        self._cache[shop_id] = (now, facts)
        return facts

    async def _segmentation_basket(self, conn: Connection, shop_id: str) -> Decimal | None:
        exists = await conn.fetchval("SELECT to_regclass('segmentation_shop_stats') IS NOT NULL")
        if not exists:
            return None
        value = await conn.fetchval(
            "SELECT average_basket FROM segmentation_shop_stats WHERE shop_id = $1", shop_id
        )
        return None if value is None else Decimal(value)

    async def orders_seen(self, conn: Connection, orders: Sequence[SeenOrder]) -> None:
        if not orders:
            return
        ordered = sorted(orders)  # one lock order for every writer: no deadlock
        await conn.execute(
            """INSERT INTO orchestrator_orders (shop_id, order_id, total, ordered_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::timestamptz[])
               ON CONFLICT DO NOTHING""",
            [o.shop_id for o in ordered],
            [o.order_id for o in ordered],
            [o.total for o in ordered],
            [o.at for o in ordered],
        )


@dataclass(frozen=True)
class FixedShops:
    """Same facts for every shop (backtests, tests)."""

    timezone: str = "UTC"
    average_basket: Decimal | None = None

    async def shop_facts(self, conn: Connection, shop_id: str, now: datetime) -> ShopFacts:
        return ShopFacts(
            shop_id=shop_id, timezone=self.timezone, average_basket=self.average_basket
        )

    async def orders_seen(self, conn: Connection, orders: Sequence[SeenOrder]) -> None:
        return None
