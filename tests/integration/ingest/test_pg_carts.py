"""Carts and API keys in a real PostgreSQL, through the ingest use case."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from relance_events.payloads import CartChanged, OrderCompleted
from relance_ingest.adapters.pg_carts import PgCartRepository, PgCartStore, _broken
from relance_ingest.http.router import build_router
from relance_ingest.http.segment import IngestFront, segment_endpoints
from relance_ingest.ports import CartProbe
from relance_ingest.services import IngestService
from relance_ingest.settings import IngestSettings
from relance_ingest.testing import RecordingPublisher
from relance_ingest.wiring import make_deps
from relance_runtime.auth import PostgresKeyStore, StaticKeyStore
from relance_runtime.clock import SystemClock
from relance_runtime.errors import BusUnavailable
from relance_runtime.tokens import TokenSigner

from .conftest import _free_port

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


class OneConnectionStore:
    """Sessions on the test's connection, one transaction each (like PgCartStore)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def open_carts(self, probes: Sequence[CartProbe]) -> list[bool]:
        return await PgCartRepository(self.conn).open_carts(probes)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[PgCartRepository]:
        async with self.conn.transaction():
            yield PgCartRepository(self.conn)


def track(message_id: str, event: str, props: dict[str, Any], **ids: str) -> tuple[None, dict]:
    return (
        None,
        {
            "type": "track",
            "messageId": message_id,
            "event": event,
            "properties": props,
            **(ids or {"userId": "u1"}),
        },
    )


async def test_carts_persist_fold_once_follow_alias_and_close(pg_conn: asyncpg.Connection) -> None:
    publisher = RecordingPublisher()
    service = IngestService(publisher, OneConnectionStore(pg_conn))
    add = track(
        "m1", "Product Added", {"product_id": "a", "price": 3, "quantity": 2}, anonymousId="v1"
    )
    await service.accept("s", [add], NOW)
    await service.accept("s", [add], NOW)  # a retry: same event, not folded twice
    await service.accept("s", [track("m2", "Product Added", {"product_id": "b", "price": 1})], NOW)
    await service.accept(
        "s",
        [(None, {"type": "alias", "messageId": "al", "userId": "u1", "previousId": "v1"})],
        NOW,
    )
    merged = publisher.events[-1]
    assert isinstance(merged.payload, CartChanged)
    assert merged.payload.change == "merged"
    assert sorted((i.product_id, i.quantity) for i in merged.payload.items) == [("a", 2), ("b", 1)]
    first, retried = publisher.events[0], publisher.events[1]
    assert first.event_id == retried.event_id
    assert retried.payload.items[0].quantity == 2

    await service.accept("s", [track("m3", "Order Completed", {"order_id": "o", "total": 7})], NOW)
    order = publisher.events[-1]
    assert isinstance(order.payload, OrderCompleted)
    assert order.payload.cart_id == merged.payload.cart_id
    rows = await pg_conn.fetch(
        "select contact_key, is_open from ingest_carts where shop_id = 's' order by cart_id"
    )
    assert {(r["contact_key"], r["is_open"]) for r in rows} == {("u1", False)}


async def test_refused_publish_rolls_the_cart_back(pg_conn: asyncpg.Connection) -> None:
    publisher = RecordingPublisher()
    publisher.fail = True
    service = IngestService(publisher, OneConnectionStore(pg_conn))
    add = track("m1", "Product Added", {"product_id": "a"})
    with pytest.raises(BusUnavailable):
        await service.accept("s", [add], NOW)
    assert await pg_conn.fetchval("select count(*) from ingest_carts") == 0
    assert await pg_conn.fetchval("select count(*) from ingest_cart_applied") == 0


async def test_database_keys_rotate_and_revoke(pg_conn: asyncpg.Connection) -> None:
    store = PostgresKeyStore(pg_conn)
    await store.add("shopA", "write", "old-key")
    await store.add("shopA", "write", "new-key")
    assert await store.shop_for("write", "old-key") == "shopA"
    assert await store.shop_for("admin", "old-key") is None
    await store.revoke("old-key")
    assert await store.shop_for("write", "old-key") is None
    assert await store.shop_for("write", "new-key") == "shopA"
    stored = await pg_conn.fetchval("select string_agg(key_hash, ',') from ingest_api_keys")
    assert "new-key" not in stored


async def test_open_carts_answers_each_probe_from_one_read(
    pool: asyncpg.Pool, pg_conn: asyncpg.Connection
) -> None:
    await pg_conn.execute(
        "insert into ingest_carts (shop_id, cart_id, contact_key, is_open) values"
        " ('s', 'c1', 'u1', true), ('s', 'c2', 'u2', false), ('t', 'c3', 'u3', true)"
    )
    probes = [
        CartProbe("s", {"u1"}, set()),  # open cart of the contact
        CartProbe("s", {"u2"}, set()),  # only a closed one
        CartProbe("t", {"u1"}, set()),  # u1 has no cart in that shop
        CartProbe("s", set(), {"c1"}),  # open cart by id
        CartProbe("s", set(), {"c2"}),  # closed cart by id
        CartProbe("s", {"nobody"}, {"c1"}),
        CartProbe("t", {"u3"}, {"c1"}),  # c1 is another shop's, but u3 has c3
        CartProbe("s", set(), set()),
    ]
    store = PgCartStore(pool)
    try:
        answers = await store.open_carts(probes)
        assert await store.open_carts([]) == []
    finally:
        await store.close()
    assert answers == [True, False, False, True, False, True, True, False]


async def test_a_broken_reading_connection_is_replaced(pool: asyncpg.Pool) -> None:
    store = PgCartStore(pool)
    probe = [CartProbe("s", {"u"}, ())]
    try:
        assert await store.open_carts(probe) == [False]
        reader = store._reader
        assert reader is not None
        await pool.execute("select pg_terminate_backend($1)", reader.get_server_pid())
        for _ in range(100):  # the client notices the lost connection on its own
            if _broken(reader):
                break
            await asyncio.sleep(0.05)
        assert await store.open_carts(probe) == [False]
        assert store._reader is not reader
    finally:
        await store.close()


async def test_cart_database_away_gives_503_with_retry_after_and_publishes_nothing() -> None:
    """A real pool to a PostgreSQL that is not there (nothing listens on the port): orders
    (the grouped open-cart read) and cart changes (the transactional path) are refused
    with 503 + Retry-After, never a 500, and nothing reaches the bus."""
    dead = f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres"
    pool = await asyncpg.create_pool(dead, min_size=0, max_size=2)
    publisher = RecordingPublisher()
    deps = make_deps(
        IngestSettings(bus_retry_after_s=3),
        publisher=publisher,
        carts=PgCartStore(pool),
        keys=StaticKeyStore.from_settings("shop1:wk", ""),
        signer=TokenSigner.from_setting("k1:0123456789abcdef0123456789abcdef"),
        clock=SystemClock(),
    )
    app = FastAPI()
    app.include_router(build_router(deps))
    endpoints = segment_endpoints(deps)
    front = IngestFront(app, lambda: endpoints)
    now = datetime.now(UTC).isoformat()
    order = {
        "userId": "u1",
        "messageId": "m1",
        "timestamp": now,
        "event": "Order Completed",
        "properties": {"order_id": "o1", "total": 10},
    }
    added = {
        "userId": "u1",
        "messageId": "m2",
        "timestamp": now,
        "event": "Product Added",
        "properties": {"product_id": "p1", "price": 5, "quantity": 1},
    }
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=front), base_url="http://ingest.test"
        ) as client:
            for body in (order, added):
                response = await client.post("/v1/track", json=body, auth=("wk", ""))
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "3"
                reason = response.json()["errors"][0]["reason"]
                assert "database is unavailable" in reason
    finally:
        await pool.close()
    assert publisher.events == []
