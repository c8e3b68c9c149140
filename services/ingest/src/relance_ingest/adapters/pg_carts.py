"""Carts in PostgreSQL (`ingest_carts`, `ingest_cart_applied`; migration 0002)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from relance_events.payloads import LineItem
from relance_events.segment_spec import Cart, CartBook


class PgCartRepository:
    """Cart reads and writes on a connection the caller holds inside a transaction."""

    def __init__(self, conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def has_open_cart(
        self, shop_id: str, *, contact_keys: Collection[str], cart_ids: Collection[str]
    ) -> bool:
        found: bool = await self._conn.fetchval(
            "select exists (select 1 from ingest_carts where shop_id = $1 and is_open"
            " and (cart_id = any($2::text[]) or contact_key = any($3::text[])))",
            shop_id,
            list(cart_ids),
            list(contact_keys),
        )
        return found

    async def load(
        self,
        shop_id: str,
        *,
        contact_keys: Collection[str],
        cart_ids: Collection[str],
        delta_ids: Collection[uuid.UUID],
    ) -> CartBook:
        # FOR UPDATE serialises concurrent requests touching the same carts.
        rows = await self._conn.fetch(
            "select cart_id, contact_key, items, currency, is_open from ingest_carts"
            " where shop_id = $1 and (cart_id = any($2::text[])"
            " or (contact_key = any($3::text[]) and is_open))"
            " order by cart_id for update",
            shop_id,
            list(cart_ids),
            list(contact_keys),
        )
        carts = {
            row["cart_id"]: Cart(
                cart_id=row["cart_id"],
                contact_key=row["contact_key"],
                items=tuple(LineItem.model_validate(i) for i in orjson.loads(row["items"])),
                currency=row["currency"],
                is_open=row["is_open"],
            )
            for row in rows
        }
        applied: set[uuid.UUID] = set()
        if delta_ids:
            found = await self._conn.fetch(
                "select event_id from ingest_cart_applied"
                " where shop_id = $1 and event_id = any($2::uuid[])",
                shop_id,
                list(delta_ids),
            )
            applied = {row["event_id"] for row in found}
        return CartBook(shop_id, carts=carts, applied=applied)

    async def save(self, book: CartBook) -> None:
        rows = [
            (
                book.shop_id,
                cart.cart_id,
                cart.contact_key,
                orjson.dumps([i.model_dump(mode="json") for i in cart.items]).decode(),
                cart.currency,
                cart.is_open,
            )
            for cart in (book.carts[cid] for cid in sorted(book.changed))
        ]
        if rows:
            await self._conn.executemany(
                "insert into ingest_carts"
                " (shop_id, cart_id, contact_key, items, currency, is_open)"
                " values ($1, $2, $3, $4::jsonb, $5, $6)"
                " on conflict (shop_id, cart_id) do update set contact_key = excluded.contact_key,"
                " items = excluded.items, currency = excluded.currency,"
                " is_open = excluded.is_open, updated_at = now()",
                rows,
            )
        if book.newly_applied:
            await self._conn.executemany(
                "insert into ingest_cart_applied (shop_id, event_id) values ($1, $2)"
                " on conflict do nothing",
                [(book.shop_id, i) for i in sorted(book.newly_applied)],
            )


class PgCartStore:
    """Sessions on connections from a pool, one transaction each."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def has_open_cart(
        self, shop_id: str, *, contact_keys: Collection[str], cart_ids: Collection[str]
    ) -> bool:
        async with self._pool.acquire() as conn:
            return await PgCartRepository(conn).has_open_cart(
                shop_id, contact_keys=contact_keys, cart_ids=cart_ids
            )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[PgCartRepository]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PgCartRepository(conn)
