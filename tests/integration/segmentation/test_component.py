"""The wired segmentation component on a real platform (PostgreSQL log bus, outbox, keys)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from relance_events import topics
from relance_events.event import Event, new_event
from relance_events.payloads import (
    CartChanged,
    ContactAliased,
    ContactIdentified,
    ContactTraits,
    CustomTracked,
    LifecycleStageChanged,
    LineItem,
    OrderCompleted,
    Payload,
)
from relance_runtime.auth import install_auth_handler
from relance_runtime.platform import Platform
from relance_runtime.service import Component
from relance_segmentation.bootstrap import build, build_service
from relance_segmentation.domain.lifecycle import months_before
from relance_segmentation.settings import SegmentationSettings

from ...support import eventually as wait_for
from ...support import topic_events

SHOP = "shop"


def ev(payload: Payload, key: str, at: datetime, shop: str = SHOP) -> Event[Payload]:
    return new_event(payload, shop_id=shop, contact_key=key, source="test", occurred_at=at)


@pytest.fixture
async def component(platform: Platform) -> AsyncIterator[Component]:
    built = build(platform)
    assert isinstance(built, Component)
    await built.start()
    yield built
    await built.stop()


async def contact_row(platform: Platform, key: str, shop: str = SHOP) -> Any:
    async with platform.pool.acquire() as conn:
        return await conn.fetchrow(
            "select c.*, p.r, p.f, p.m, p.segment, p.stage, p.tier from segmentation_contacts c"
            " left join segmentation_profiles p on p.contact_id = c.id"
            " where c.shop_id = $1 and c.contact_key = $2",
            shop,
            key,
        )


async def segment_events(platform: Platform) -> list[Event[Payload]]:
    """Everything on the SEGMENTS topic so far."""
    return await topic_events(platform, topics.SEGMENTS)


async def test_events_show_in_aggregates_within_a_second(
    platform: Platform, component: Component
) -> None:
    now = platform.clock.now()
    await platform.bus.publish([ev(ContactIdentified(user_id="warm"), "warm", now)])
    await wait_for(lambda: contact_row(platform, "warm"))  # the consumer has joined

    item = LineItem(product_id="p1", price=Decimal(20), quantity=2)
    await platform.bus.publish(
        [
            ev(
                ContactIdentified(user_id="u1", traits=ContactTraits(email="u1@example.com")),
                "u1",
                now,
            ),
            ev(
                CartChanged(cart_id="k1", items=[item], total=Decimal(40), change="product_added"),
                "u1",
                now,
            ),
        ]
    )
    order = ev(OrderCompleted(order_id="A1", total=Decimal("40.00"), cart_id="k1"), "u1", now)
    await platform.bus.publish([order])
    published = time.monotonic()

    async def bought() -> Any:
        row = await contact_row(platform, "u1")
        return row is not None and row["orders_count"] == 1

    await wait_for(bought, timeout_s=5)
    assert time.monotonic() - published <= 1.0
    row = await contact_row(platform, "u1")
    assert row["gross"] == Decimal("40.00")
    assert row["stage"] == "new_customer"
    assert row["tier"] == "discovery"
    assert row["open_carts"] == "{}"


async def test_redelivered_event_changes_nothing_and_a_stage_change_is_one_event(
    platform: Platform, component: Component
) -> None:
    now = platform.clock.now()
    first = ev(OrderCompleted(order_id="B1", total=Decimal(30)), "u2", now)
    await platform.bus.publish([first])

    async def counted(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            row = await contact_row(platform, "u2")
            return row is not None and row["orders_count"] == n

        return check

    await wait_for(await counted(1))
    second = ev(OrderCompleted(order_id="B2", total=Decimal(50)), "u2", now)
    # the first one again (same event id), the same order under a new event id, a new order
    await platform.bus.publish([first])
    await platform.bus.publish([ev(OrderCompleted(order_id="B1", total=Decimal(30)), "u2", now)])
    await platform.bus.publish([second])
    await wait_for(await counted(2))
    await platform.bus.publish([second])
    await asyncio.sleep(0.5)  # give a wrong second application its chance to show

    row = await contact_row(platform, "u2")
    assert (row["orders_count"], row["gross"]) == (2, Decimal(80))
    assert row["stage"] == "loyal"
    mine = [e for e in await segment_events(platform) if e.contact_key == "u2"]
    stages = [e.payload for e in mine if isinstance(e.payload, LifecycleStageChanged)]
    assert [(p.previous, p.current) for p in stages] == [
        (None, "new_customer"),
        ("new_customer", "loyal"),
    ]
    assert len({e.event_id for e in mine}) == len(mine)


async def test_alias_moves_the_anonymous_history_to_the_known_contact(
    platform: Platform, component: Component
) -> None:
    now = platform.clock.now()
    await platform.bus.publish(
        [
            ev(OrderCompleted(order_id="C1", total=Decimal(25)), "anon:a1", now),
            ev(OrderCompleted(order_id="C2", total=Decimal(35)), "u3", now + timedelta(hours=1)),
        ]
    )

    async def both() -> bool:
        return (await contact_row(platform, "anon:a1")) is not None and (
            await contact_row(platform, "u3")
        ) is not None

    await wait_for(both)
    await platform.bus.publish([ev(ContactAliased(user_id="u3", previous_id="a1"), "u3", now)])

    async def merged() -> Any:
        row = await contact_row(platform, "u3")
        return row["orders_count"] == 2 and row

    row = await wait_for(merged)
    assert row["gross"] == Decimal(60)
    assert row["stage"] == "loyal"
    assert await contact_row(platform, "anon:a1") is None
    async with platform.pool.acquire() as conn:
        owners = await conn.fetch(
            "select distinct contact_key from segmentation_orders where shop_id = $1", SHOP
        )
    assert [r["contact_key"] for r in owners] == ["u3"]


async def test_a_new_shop_gets_rfm_segments_promptly(
    platform: Platform, component: Component
) -> None:
    now = platform.clock.now()
    await platform.bus.publish(
        [ev(OrderCompleted(order_id="N1", total=Decimal(10)), "n1", now, shop="newshop")]
    )

    async def segmented() -> Any:
        row = await contact_row(platform, "n1", shop="newshop")
        return row is not None and row["segment"] is not None and row

    row = await wait_for(segmented, timeout_s=5)
    assert (row["r"], row["f"], row["m"]) == (1, 1, 1)  # alone: every value ties
    assert row["segment"] == "lost"


async def test_scheduled_recompute_emits_lapsing_on_the_day(
    platform: Platform, component: Component
) -> None:
    real_now = platform.clock.now()
    that_day = (real_now + timedelta(days=3)).replace(microsecond=0)
    last_order = months_before(that_day, 6)
    await platform.bus.publish(
        [
            ev(OrderCompleted(order_id="L2", total=Decimal(40)), "u4", last_order),
            ev(
                OrderCompleted(order_id="L1", total=Decimal(40)),
                "u4",
                last_order - timedelta(days=30),
            ),
        ]
    )

    async def scored() -> Any:
        # the component's own first recompute of the shop is over
        row = await contact_row(platform, "u4")
        return row is not None and row["stage"] == "loyal" and row["segment"] is not None

    await wait_for(scored)
    # a second instance of the service, driven by hand
    other = build_service(platform, SegmentationSettings())
    await other.recompute_due(that_day - timedelta(days=1))
    assert (await contact_row(platform, "u4"))["stage"] == "loyal"
    done = await other.recompute_due(that_day)
    assert [d.shop_id for d in done] == [SHOP]
    assert (await contact_row(platform, "u4"))["stage"] == "lapsing"
    assert await other.recompute_due(that_day + timedelta(hours=1)) == []  # not due again
    await other.recompute_due(that_day + timedelta(days=1))

    stages = [
        e.payload
        for e in await segment_events(platform)
        if e.contact_key == "u4" and isinstance(e.payload, LifecycleStageChanged)
    ]
    assert [(p.previous, p.current, p.as_of) for p in stages][-1] == (
        "loyal",
        "lapsing",
        that_day,
    )
    assert [(p.previous, p.current) for p in stages] == [
        (None, "new_customer"),
        ("new_customer", "loyal"),
        ("loyal", "lapsing"),
    ]


def admin_app(component: Component) -> FastAPI:
    app = FastAPI()
    install_auth_handler(app)
    for router in component.routers():
        app.include_router(router)
    return app


async def test_http_api(platform: Platform, component: Component) -> None:
    now = platform.clock.now()
    await platform.bus.publish(
        [
            ev(
                ContactIdentified(user_id="u5", traits=ContactTraits(first_name="Ada")),
                "u5",
                now,
            ),
            ev(OrderCompleted(order_id="H1", total=Decimal("12.50")), "u5", now),
        ]
    )

    async def scored() -> Any:
        row = await contact_row(platform, "u5")
        return row is not None and row["segment"] is not None

    await wait_for(scored)
    transport = httpx.ASGITransport(admin_app(component))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        denied = await client.get("/v1/contacts/u5")
        assert denied.status_code == 401
        assert denied.json()["errors"][0]["field"] == "authorization"
        assert (await client.get("/v1/contacts/u5", auth=("wk-test", ""))).status_code == 401
        unknown = await client.get("/v1/contacts/nobody", auth=("ak-test", ""))
        assert unknown.status_code == 404
        assert unknown.json() == {"errors": [{"field": "user_id", "reason": "unknown contact"}]}

        got = await client.get("/v1/contacts/u5", auth=("ak-test", ""))
        assert got.status_code == 200
        body = got.json()
        assert body["user_id"] == "u5"
        assert body["traits"]["first_name"] == "Ada"
        assert body["aggregates"]["orders_count"] == 1
        assert Decimal(body["aggregates"]["net_monetary"]) == Decimal("12.50")
        assert body["rfm"]["frequency"] == 1
        assert body["rfm"]["recency_days"] == 0
        assert (body["rfm"]["r"], body["rfm"]["f"], body["rfm"]["m"]) == (1, 1, 1)
        assert body["rfm"]["segment"] == "lost"
        assert (body["stage"], body["tier"], body["open_carts"]) == (
            "new_customer",
            "discovery",
            [],
        )

        summary = await client.get("/v1/segments/summary", auth=("ak-test", ""))
        assert summary.status_code == 200
        s = summary.json()
        assert s["contacts_per_stage"] == {"new_customer": 1}
        assert s["contacts_per_tier"] == {"discovery": 1}
        assert s["contacts_per_segment"] == {"lost": 1}
        assert Decimal(s["average_basket"]) == Decimal("12.50")

        schema = admin_app(component).openapi()
        get_contact = schema["paths"]["/v1/contacts/{user_id}"]["get"]
        ok = get_contact["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/ContactOut"}
        assert "404" in get_contact["responses"]
        assert "SummaryOut" in schema["components"]["schemas"]


async def test_two_instances_never_recompute_a_shop_twice(
    platform: Platform, component: Component
) -> None:
    now = platform.clock.now()
    await platform.bus.publish([ev(OrderCompleted(order_id="T1", total=Decimal(10)), "u6", now)])

    async def scored() -> Any:
        row = await contact_row(platform, "u6")
        return row is not None and row["segment"] is not None

    await wait_for(scored)
    one = build_service(platform, SegmentationSettings())
    two = build_service(platform, SegmentationSettings())
    later = now + timedelta(days=2)
    for _ in range(3):
        done = await asyncio.gather(one.recompute_due(later), two.recompute_due(later))
        assert sorted(len(d) for d in done) == [0, 1]
        later += timedelta(days=1)


async def test_on_kafka_an_order_shows_in_the_contact_api_within_a_second(
    kafka_platform: Platform,
) -> None:
    """Freshness, end to end on real Kafka: from publishing an order (what ingest does before
    it answers) to `GET /v1/contacts/{id}` showing it, commit of the consumer included."""
    component = build(kafka_platform)
    assert isinstance(component, Component)
    await component.start()
    try:
        transport = httpx.ASGITransport(admin_app(component))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def shows(key: str, orders: int) -> bool:
                got = await client.get(f"/v1/contacts/{key}", auth=("ak-test", ""))
                return got.status_code == 200 and got.json()["aggregates"]["orders_count"] == orders

            now = kafka_platform.clock.now()
            view = ev(CustomTracked(name="Product Viewed"), "warm", now)
            await kafka_platform.bus.publish(
                [view, ev(ContactIdentified(user_id="warm"), "warm", now)]
            )
            await wait_for(lambda: shows("warm", 0), timeout_s=60)  # the group has formed
            # no aggregate reads a view: skipped by its type header, undecoded
            assert sum(c.stats.skipped_unwanted for c in component.consumers) >= 1
            took: list[float] = []
            for i in range(20):
                key = f"fresh{i}"
                order = ev(OrderCompleted(order_id=f"F{i}", total=Decimal(25)), key, now)
                started = time.monotonic()
                await kafka_platform.bus.publish([order])
                await wait_for(lambda key=key: shows(key, 1), timeout_s=5, every_s=0.005)
                took.append(time.monotonic() - started)
    finally:
        await component.stop()
    took.sort()
    print(
        f"\nfreshness on Kafka over {len(took)} orders: p50 {took[len(took) // 2] * 1000:.0f} ms,"
        f" max {took[-1] * 1000:.0f} ms"
    )
    assert took[-1] < 1.0
