"""Carts in PostgreSQL (`ingest_carts`, `ingest_cart_applied`; migration 0002)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from relance_events.payloads import LineItem
from relance_events.segment_spec import Cart, CartBook
from relance_ingest.ports import CartProbe


class PgCartRepository:
    """Cart reads and writes on a connection the caller holds inside a transaction."""

    def __init__(self, conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def open_carts(self, probes: Sequence[CartProbe]) -> list[bool]:
        """Answer every probe with one query.

        It reads the open carts of any probed shop whose contact (or cart id) is any
        probed one, through the partial index (a probe's shop and key are paired below):
        arrays of the distinct keys, no join of pairs, which the planner sometimes ran
        as a scan of every open cart.
        """
        by_contact = [p for p in probes if p.contact_keys]
        by_cart = [p for p in probes if p.cart_ids]
        rows = await self._conn.fetch(
            "select true as by_contact, shop_id, contact_key as id from ingest_carts"
            " where is_open and shop_id = any($1::text[]) and contact_key = any($2::text[])"
            " union all "
            "select false, shop_id, cart_id from ingest_carts"
            " where is_open and shop_id = any($3::text[]) and cart_id = any($4::text[])",
            list({p.shop_id for p in by_contact}),
            list({k for p in by_contact for k in p.contact_keys}),
            list({p.shop_id for p in by_cart}),
            list({c for p in by_cart for c in p.cart_ids}),
        )
        contacts = {(r["shop_id"], r["id"]) for r in rows if r["by_contact"]}
        carts = {(r["shop_id"], r["id"]) for r in rows if not r["by_contact"]}
        return [
            any((p.shop_id, k) in contacts for k in p.contact_keys)
            or any((p.shop_id, c) in carts for c in p.cart_ids)
            for p in probes
        ]

    async def load(
        self,
        shop_id: str,
        *,
        contact_keys: Collection[str],
        cart_ids: Collection[str],
        delta_ids: Collection[uuid.UUID],
    ) -> CartBook:
        # One round trip: the carts, locked (FOR UPDATE serialises concurrent requests
        # touching the same carts; in a CTE, as a UNION takes no lock), then the deltas
        # already applied (`applied` set, the cart columns null).
        rows = await self._conn.fetch(
            "with locked as ("
            " select cart_id, contact_key, items, currency, is_open from ingest_carts"
            " where shop_id = $1 and (cart_id = any($2::text[])"
            " or (contact_key = any($3::text[]) and is_open))"
            " order by cart_id for update)"
            " select cart_id, contact_key, items, currency, is_open, null::uuid as applied"
            " from locked"
            " union all"
            " select null, null, null, null, null, event_id from ingest_cart_applied"
            " where shop_id = $1 and event_id = any($4::uuid[])",
            shop_id,
            list(cart_ids),
            list(contact_keys),
            list(delta_ids),
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
            if row["applied"] is None
        }
        applied = {row["applied"] for row in rows if row["applied"] is not None}
        return CartBook(shop_id, carts=carts, applied=applied)

    async def save(self, book: CartBook) -> None:
        """The changed carts and the newly applied deltas, in one statement."""
        changed = [book.carts[cid] for cid in sorted(book.changed)]
        applied = sorted(book.newly_applied)
        if not changed and not applied:
            return
        await self._conn.execute(
            "with saved as ("
            " insert into ingest_carts (shop_id, cart_id, contact_key, items, currency, is_open)"
            " select $1, * from unnest($2::text[], $3::text[], $4::jsonb[], $5::text[],"
            " $6::bool[])"
            " on conflict (shop_id, cart_id) do update set contact_key = excluded.contact_key,"
            " items = excluded.items, currency = excluded.currency,"
            " is_open = excluded.is_open, updated_at = now())"
            " insert into ingest_cart_applied (shop_id, event_id)"
            " select $1, unnest($7::uuid[]) on conflict do nothing",
            book.shop_id,
            [c.cart_id for c in changed],
            [c.contact_key for c in changed],
            [orjson.dumps([i.model_dump(mode="json") for i in c.items]).decode() for c in changed],
            [c.currency for c in changed],
            [c.is_open for c in changed],
            applied,
        )


class PgCartStore:
    """Sessions on connections from a pool, one transaction each.

    `open_carts` runs for every group of orders, so it reads on one connection kept for
    it (no pool round trip, no reset per read).
    """

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool
        self._reader: PoolConnectionProxy[Any] | None = None
        self._reading = asyncio.Lock()

    async def open_carts(self, probes: Sequence[CartProbe]) -> list[bool]:
        async with self._reading:
            if self._reader is not None and _broken(self._reader):
                await self.close()  # lost (server restart...): the pool discards it
            if self._reader is None:
                self._reader = await self._pool.acquire()
            try:
                return await PgCartRepository(self._reader).open_carts(probes)
            except Exception:
                if self._reader is not None and _broken(self._reader):
                    await self.close()
                raise

    async def close(self) -> None:
        """Give the reading connection back (before the pool closes)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(reader)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[PgCartRepository]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PgCartRepository(conn)


def _broken(conn: PoolConnectionProxy[Any]) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # a lost connection was already taken back by the pool
        return True
