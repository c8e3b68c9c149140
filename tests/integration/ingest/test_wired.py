"""Ingest wired by its composition root onto the real platform (PostgreSQL log, Kafka)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from segment.analytics import Client

from relance_events import Event, decode, topics
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactAliased,
    ContactIdentified,
    EmailOpened,
    LinkClicked,
    OrderCompleted,
)
from relance_ingest.bootstrap import build, configure_app
from relance_ingest.devkeys import DEV_KEYS_FILE, ensure_dev_keys_file
from relance_runtime.auth import PostgresKeyStore, install_auth_handler
from relance_runtime.host import create_host_app
from relance_runtime.inbox import claim_new
from relance_runtime.platform import Platform, start_platform
from relance_runtime.settings import CommonSettings

AUTH = {"Authorization": "Basic " + base64.b64encode(b"wk-test:").decode()}


def track(message_id: str, event: str, props: dict[str, Any], user: str = "u1") -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": user,
        "event": event,
        "properties": props,
        "timestamp": datetime.now(UTC).isoformat(),
    }


@asynccontextmanager
async def ingest_client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """The component as the host mounts it: its routers, its app hook, the 401 handler."""
    component = build(platform)
    app = FastAPI()
    install_auth_handler(app)
    configure_app(app)
    for router in component.routers():
        app.include_router(router)
    await component.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest.test"
        ) as client:
            yield client
    finally:
        await component.stop()


async def read_events(platform: Platform, count: int, timeout_s: float = 30.0) -> list[Event[Any]]:
    """Read the events topic from the start with a fresh group until `count` events."""
    consumer = platform.bus.consumer(
        f"probe-{uuid.uuid4().hex[:8]}", [platform.names.of(topics.EVENTS)]
    )
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            records += await consumer.poll(max_records=500, timeout_s=0.5)
        # A little longer: more than `count` events would be a bug too.
        records += await consumer.poll(max_records=500, timeout_s=0.3)
    finally:
        await consumer.stop()
    return [decode(r.value) for r in records]


async def log_count(platform: Platform) -> int:
    """Events durably in the PostgreSQL log right now (no consumer, no waiting)."""
    count: int = await platform.pool.fetchval(
        "select count(*) from bus_log where topic = $1", platform.names.of(topics.EVENTS)
    )
    return count


async def kafka_high_watermarks(platform: Platform) -> int:
    """Sum of the events topic's high watermarks: what every in-sync replica holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=platform.settings.kafka_bootstrap)
    await consumer.start()
    try:
        name = platform.names.of(topics.EVENTS)
        parts = [TopicPartition(name, p) for p in range(topics.EVENTS.partitions)]
        ends = await consumer.end_offsets(parts)
        return sum(ends.values())
    finally:
        await consumer.stop()


# --- the PostgreSQL log bus -------------------------------------------------------------


async def test_track_is_answered_only_once_the_event_is_in_the_log(platform: Platform) -> None:
    async with ingest_client(platform) as client:
        order = track("m-1", "Order Completed", {"order_id": "o1", "total": 25, "currency": "EUR"})
        response = await client.post("/v1/track", json=order, headers=AUTH)
        # Read at once, without waiting: the append committed before the 200.
        in_log = await log_count(platform)
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert in_log == 1
    (event,) = await read_events(platform, 1)
    assert isinstance(event.payload, OrderCompleted)
    assert (event.shop_id, event.contact_key, event.payload.order_id) == ("shop", "u1", "o1")


async def test_refused_append_gives_503_and_nothing_of_the_batch(platform: Platform) -> None:
    # A real failure inside the bus's own transaction: the log refuses one message.
    await platform.pool.execute(
        """create function refuse_poison() returns trigger language plpgsql as $$
           begin
             if convert_from(new.value, 'UTF8') like '%poison%' then
               raise exception 'disk full (simulated)';
             end if;
             return new;
           end $$;
           create trigger refuse_poison before insert on bus_log
           for each row execute function refuse_poison();"""
    )
    batch = [
        track("b-1", "Product Added", {"product_id": "p1", "price": 3, "quantity": 2}),
        track("b-2", "Signed Up", {}),
        track("b-3", "poison", {}),
    ]
    async with ingest_client(platform) as client:
        refused = await client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "none of the events were accepted" in refused.json()["errors"][0]["reason"]
        assert await log_count(platform) == 0
        assert await platform.pool.fetchval("select count(*) from ingest_carts") == 0
        assert await platform.pool.fetchval("select count(*) from ingest_cart_applied") == 0

        await platform.pool.execute("drop trigger refuse_poison on bus_log")
        retried = await client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert retried.status_code == 200
    events = await read_events(platform, 3)
    assert [type(e.payload).__name__ for e in events] == [
        "CartChanged",
        "CustomTracked",
        "CustomTracked",
    ]
    cart = events[0].payload
    assert isinstance(cart, CartChanged)
    assert [(i.product_id, i.quantity) for i in cart.items] == [("p1", 2)]


async def test_same_message_id_is_one_event_downstream(platform: Platform) -> None:
    message = track("dup-1", "Product Added", {"product_id": "p1", "quantity": 1})
    async with ingest_client(platform) as client:
        for _ in range(3):
            response = await client.post("/v1/track", json=message, headers=AUTH)
            assert response.status_code == 200
    events = await read_events(platform, 3)
    assert len(events) == 3  # at-least-once on the bus; the id makes them one
    assert len({e.event_id for e in events}) == 1
    # The cart folded the product once, so every copy carries the same content.
    assert {e.payload.items[0].quantity for e in events} == {1}
    async with platform.pool.acquire() as conn, conn.transaction():
        applied = await claim_new(conn, "probe", [e.event_id for e in events])
    assert applied == {events[0].event_id}


async def test_tracking_endpoints_publish_opens_clicks_and_consent(platform: Platform) -> None:
    claims = {"s": "shop", "c": "u7", "m": "msg-1", "pl": "winback", "st": "s1"}
    opened = platform.tokens.mint("open", claims)
    clicked = platform.tokens.mint("click", {**claims, "u": "https://shop.test/p"})
    unsub = platform.tokens.mint("unsub", {**claims, "ch": "email", "pu": "marketing"})
    form = {"content": b"List-Unsubscribe=One-Click"}
    form_type = {"content-type": "application/x-www-form-urlencoded"}
    async with ingest_client(platform) as client:
        pixel = await client.get(f"/t/o/{opened}.gif")
        forged = await client.get(f"/t/c/{clicked[:-2]}xx?u=https://evil.test/")
        redirect = await client.get(f"/t/c/{clicked}?u=https://evil.test/")
        page = await client.get(f"/u/{unsub}")
        assert await log_count(platform) == 2  # the confirmation page changes nothing
        posts = [await client.post(f"/u/{unsub}", headers=form_type, **form) for _ in range(2)]
    assert pixel.content.startswith(b"GIF89a")
    assert forged.status_code == 400
    assert (redirect.status_code, redirect.headers["location"]) == (302, "https://shop.test/p")
    assert page.status_code == 200 and "List-Unsubscribe" in page.text
    assert [p.status_code for p in posts] == [200, 200]
    events = await read_events(platform, 4)
    by_type = {type(e.payload): e for e in events}
    assert set(by_type) == {EmailOpened, LinkClicked, ConsentChanged}
    assert by_type[EmailOpened].payload.message_id == "msg-1"
    assert by_type[LinkClicked].payload.url == "https://shop.test/p"
    consent = by_type[ConsentChanged]
    assert (consent.contact_key, consent.payload.status, consent.payload.channel) == (
        "u7",
        "denied",
        "email",
    )
    unsub_ids = {e.event_id for e in events if isinstance(e.payload, ConsentChanged)}
    assert len(unsub_ids) == 1  # the repeat is the same event


# --- real Kafka -------------------------------------------------------------------------


async def test_track_on_kafka_is_answered_once_acknowledged(kafka_platform: Platform) -> None:
    async with ingest_client(kafka_platform) as client:
        batch = [
            track(f"k-{i}", "Order Completed", {"order_id": f"o{i}", "total": 10}, user=f"u{i}")
            for i in range(20)
        ]
        response = await client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
        # The high watermark moves only once every in-sync replica has the record (acks=all).
        acknowledged = await kafka_high_watermarks(kafka_platform)
    assert response.status_code == 200
    assert acknowledged == 20
    events = await read_events(kafka_platform, 20)
    assert sorted(e.payload.order_id for e in events) == sorted(f"o{i}" for i in range(20))
    assert {e.shop_id for e in events} == {"shop"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_kafka_gives_503_and_rolls_the_cart_back(
    database_url: str, tmp_path: Path
) -> None:
    settings = CommonSettings(
        database_url=database_url,
        bus="kafka",
        kafka_bootstrap=f"127.0.0.1:{_free_port()}",  # nothing listens there
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        data_dir=tmp_path / "var",
        write_keys="shop:wk-test",
    )
    platform = await start_platform(settings, client_id="relance-test")
    try:
        async with ingest_client(platform) as client:
            add = track("c-1", "Product Added", {"product_id": "p1", "quantity": 1})
            single = await client.post("/v1/track", json=add, headers=AUTH)
            batch = await client.post("/v1/batch", json={"batch": [add]}, headers=AUTH)
        carts = await platform.pool.fetchval("select count(*) from ingest_carts")
        applied = await platform.pool.fetchval("select count(*) from ingest_cart_applied")
    finally:
        await platform.stop()
    for response in (single, batch):
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
    assert (carts, applied) == (0, 0)


# --- the whole host app, served by uvicorn, and the unmodified Segment SDK ---------------


@pytest.fixture
def served(platform: Platform) -> Iterator[str]:
    """`create_host_app` with ingest, in its own thread and loop, on the test's database."""
    app = create_host_app(platform.settings, {"ingest": build}, app_hooks=[configure_app])
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


async def test_unmodified_segment_sdk_against_the_served_app(
    served: str, platform: Platform
) -> None:
    def send() -> None:
        client = Client("wk-test", host=served, sync_mode=True, max_retries=0, gzip=True)
        client.track(
            anonymous_id="v9", event="Product Added", properties={"product_id": "p", "price": 5}
        )
        client.identify("u9", {"email": "ann@example.com", "first_name": "Ann"}, anonymous_id="v9")
        client.track("u9", "Order Completed", {"order_id": "o9", "revenue": 5, "currency": "EUR"})
        client.alias("v9", "u9")

    await asyncio.to_thread(send)
    bad = await asyncio.to_thread(
        httpx.post, f"{served}/v1/track", json={}, auth=("not-a-key", ""), timeout=10
    )
    ready = await asyncio.to_thread(httpx.get, f"{served}/readyz", timeout=10)
    events = await read_events(platform, 6)
    kinds = [type(e.payload) for e in events]
    assert len(events) == 6
    assert kinds.count(ContactIdentified) == 1
    assert kinds.count(OrderCompleted) == 1
    assert kinds.count(ContactAliased) == 2  # identify with both ids, then alias
    merged = [e for e in events if isinstance(e.payload, CartChanged) and e.contact_key == "u9"]
    assert merged and merged[0].payload.change == "merged"
    assert {e.shop_id for e in events} == {"shop"}
    assert bad.status_code == 401
    assert ready.status_code == 200
    closed = await platform.pool.fetchval(
        "select count(*) from ingest_carts where contact_key = 'u9' and not is_open"
    )
    assert closed == 1  # the order closed the cart that followed the visitor


# --- dev keys for the embedded default --------------------------------------------------


async def test_dev_keys_created_once_stored_hashed_and_written_private(
    database_url: str, tmp_path: Path
) -> None:
    settings = CommonSettings(database_url=database_url, data_dir=tmp_path / "var")
    platform = await start_platform(settings, client_id="relance-test")
    try:
        created = await ensure_dev_keys_file(platform, settings.data_dir)
        again = await ensure_dev_keys_file(platform.pool, settings.data_dir)
        store = PostgresKeyStore(platform.pool)
        shops = (
            await store.shop_for("write", created["write"]),
            await store.shop_for("admin", created["admin"]),
            await store.shop_for("write", created["admin"]),
        )
        stored = await platform.pool.fetchval(
            "select string_agg(key_hash, ',') from ingest_api_keys"
        )
        rows = await platform.pool.fetchval("select count(*) from ingest_api_keys")
        async with ingest_client(platform) as client:
            response = await client.post(
                "/v1/track",
                json=track("dk-1", "Signed Up", {}),
                auth=(created["write"], ""),
            )
        configured = await ensure_dev_keys_file(
            platform.pool, tmp_path / "other", write_keys="shop:k"
        )
    finally:
        await platform.stop()
    path = settings.data_dir / DEV_KEYS_FILE
    assert set(created) == {"write", "admin"}
    assert again == created  # a restart prints the same, still active keys
    assert shops == ("default", "default", None)
    assert created["write"] not in stored and created["admin"] not in stored
    assert rows == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert created["write"] in path.read_text()
    assert response.status_code == 200
    assert configured == {}
    assert not (tmp_path / "other").exists()
