"""The wired orchestrator on a real platform (PostgreSQL log bus, runtime outbox, keys):
consumer -> message.requested on MESSAGE_REQUESTS, the timer loop on an injected clock,
crashes around firing, poison timers, aliases and `/v1/plans/stats`."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from relance_events import Event, deterministic_id, new_event, topics
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactAliased,
    ContactIdentified,
    ContactTraits,
    CustomTracked,
    EmailOpened,
    LineItem,
    LinkClicked,
    MessageRequested,
    MessageSent,
    OrderCompleted,
    PageViewed,
    Payload,
)
from relance_orchestrator.adapters.state_codec import pack_state, unpack_state
from relance_orchestrator.bootstrap import build, wire
from relance_orchestrator.consumer import TimerLoop
from relance_orchestrator.domain.state import StepRecord
from relance_orchestrator.settings import OrchestratorSettings
from relance_runtime.auth import install_auth_handler
from relance_runtime.clock import FixedClock
from relance_runtime.db import Connection
from relance_runtime.outbox import OutboxRelay
from relance_runtime.platform import Platform
from relance_runtime.service import Component

from ...support import eventually as wait_for
from ...support import topic_events

SHOP = "shop"
T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def ev(payload: Payload, key: str, at: datetime) -> Event[Payload]:
    return new_event(payload, shop_id=SHOP, contact_key=key, source="test", occurred_at=at)


def order(key: str, order_id: str, at: datetime, total: int = 80) -> Event[Payload]:
    return ev(OrderCompleted(order_id=order_id, total=Decimal(total)), key, at)


def welcome_id(contact: str, step: str = "welcome", anchor: datetime = T0) -> str:
    instance = str(
        deterministic_id(SHOP, contact, "welcome_pack", "first_order", anchor.isoformat())
    )
    return str(deterministic_id(SHOP, contact, "welcome_pack", step, instance))


def steps_of(events: Sequence[Event[MessageRequested]], contact: str) -> list[str]:
    return [e.payload.step for e in events if e.contact_key == contact]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0 + timedelta(minutes=1))


@pytest.fixture
async def component(platform: Platform, clock: FixedClock) -> AsyncIterator[Component]:
    built = build(platform, clock=clock)
    await built.start()
    yield built
    await built.stop()


async def requested(platform: Platform) -> list[Event[MessageRequested]]:
    """Everything on MESSAGE_REQUESTS so far."""
    return await topic_events(platform, topics.MESSAGE_REQUESTS)  # type: ignore[return-value]


async def test_order_requests_welcome_once_and_the_timer_loop_fires_second_purchase(
    platform: Platform, component: Component, clock: FixedClock
) -> None:
    traits = ContactTraits(email="ann@example.com", first_name="Ann", locale="fr-FR")
    await platform.bus.publish([ev(ContactIdentified(user_id="ann", traits=traits), "ann", T0)])
    first = order("ann", "o1", T0)
    await platform.bus.publish([first])
    got = await wait_for(lambda: _steps(platform, "ann", 1))
    welcome = got[0]
    assert (welcome.payload.plan, welcome.payload.step) == ("welcome_pack", "welcome")
    assert welcome.payload.message_id == welcome_id("ann")
    assert welcome.event_id == deterministic_id("message.requested", welcome_id("ann"))
    assert welcome.payload.variant == "standard"  # 80 is not above the shop's average (80)
    contact = welcome.payload.context["contact"]
    assert isinstance(contact, dict)
    assert contact["email"] == "ann@example.com" and contact["first_name"] == "Ann"
    assert welcome.payload.locale == "fr-FR"

    # a redelivered order (same event id) produces nothing new; a later marker proves the
    # consumer went past it
    await platform.bus.publish([first, order("bob", "o2", T0)])
    await wait_for(lambda: _steps(platform, "bob", 1))
    assert steps_of(await requested(platform), "ann") == ["welcome"]

    clock.set(T0 + 4 * DAY + timedelta(minutes=1))
    fired = await wait_for(lambda: _steps(platform, "ann", 2))
    assert [e.payload.step for e in fired] == ["welcome", "second_purchase"]
    assert fired[1].payload.message_id == welcome_id("ann", "second_purchase")


async def test_views_no_plan_reads_are_skipped_before_the_database(
    platform: Platform, component: Component
) -> None:
    """Page and product views (most of a shop's stream) reach no plan: the consumer skips
    them by type, undecoded, and never locks or creates a contact for them."""
    views = [
        ev(CustomTracked(name="Product Viewed", properties={"product_id": "p1"}), "viewer", T0),
        ev(PageViewed(name="Home"), "viewer", T0),
    ]
    await platform.bus.publish([*views, order("buyer", "o-marker", T0)])
    await wait_for(lambda: _steps(platform, "buyer", 1))  # the consumer went past the views
    async with platform.pool.acquire() as conn:
        claimed = await conn.fetchval(
            "SELECT count(*) FROM runtime_inbox WHERE consumer = 'orchestrator'"
            " AND event_id = ANY($1::uuid[])",
            [v.event_id for v in views],
        )
        viewer = await conn.fetchval(
            "SELECT count(*) FROM orchestrator_contacts WHERE contact_key = 'viewer'"
        )
    assert (claimed, viewer) == (0, 0)
    assert sum(c.stats.skipped_unwanted for c in component.consumers) >= len(views)


async def _steps(platform: Platform, contact: str, n: int) -> list[Event[MessageRequested]]:
    mine = [e for e in await requested(platform) if e.contact_key == contact]
    return mine if len(mine) >= n else []


class KillingOutbox:
    """Stages through the real runtime outbox, then the process 'dies' before the commit."""

    def __init__(self, inner: Any, dsn: str) -> None:
        self.inner = inner
        self.dsn = dsn

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None:
        await self.inner.add(conn, events)
        killer = await asyncpg.connect(self.dsn)
        try:
            await killer.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        finally:
            await killer.close()


async def _handle(platform: Platform, loop: TimerLoop, event: Event[Any], now: datetime) -> None:
    async with platform.pool.acquire() as conn, conn.transaction():
        await loop.orchestrator.handle_event(conn, event, now)


async def test_timers_fire_exactly_once_in_effect_across_killed_orchestrators(
    platform: Platform,
) -> None:
    clock = FixedClock(T0)
    settings = OrchestratorSettings()
    first = wire(platform, settings, clock).timers
    await _handle(platform, first, order("cid", "o1", T0), T0)

    # killed just before due: nothing fired, the next process fires it
    clock.set(T0 + 4 * DAY - timedelta(seconds=1))
    assert await first.run_once() == 0

    # killed inside the firing transaction, after the outbox write: all of it rolls back
    clock.set(T0 + 4 * DAY + timedelta(seconds=1))
    doomed = dataclasses.replace(
        first,
        orchestrator=dataclasses.replace(
            first.orchestrator, outbox=KillingOutbox(platform.outbox, platform.dsn)
        ),
    )
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await doomed.run_once()
    assert steps_of(await requested(platform), "cid") == ["welcome"]

    # a fresh process fires it; the outbox write commits with the timer's deletion, so a
    # process killed after the write (before any relay) has nothing left to fire again
    second = wire(platform, settings, clock).timers
    assert await second.run_once() == 1
    third = wire(platform, settings, clock).timers
    assert await third.run_once() == 0
    events = await requested(platform)
    assert steps_of(events, "cid") == ["welcome", "second_purchase"]
    ids = [e.event_id for e in events if e.contact_key == "cid"]
    assert len(set(ids)) == len(ids)


async def test_a_poison_timer_is_parked_and_never_blocks_the_others(platform: Platform) -> None:
    clock = FixedClock(T0)
    settings = OrchestratorSettings(timer_max_attempts=3, timer_retry_backoff_s=1.0)
    loop = wire(platform, settings, clock).timers
    for contact in ("bad", "good"):
        await _handle(platform, loop, order(contact, f"o-{contact}", T0), T0)
    # the plan changed under a running instance: a scheduled step that no longer exists
    ghost = StepRecord(status="scheduled", due_at=T0 + DAY)
    async with platform.pool.acquire() as conn:
        state = unpack_state(
            await conn.fetchval(
                "SELECT packed FROM orchestrator_contacts WHERE contact_key = 'bad'"
            )
        )
        plan = state.plans["welcome_pack"]
        instance = plan.instances["first_order"]
        instance = instance.evolve({"steps": {**instance.steps, "ghost": ghost}})
        plan = plan.evolve({"instances": {**plan.instances, "first_order": instance}})
        await conn.execute(
            "UPDATE orchestrator_contacts SET packed = $1 WHERE contact_key = 'bad'",
            pack_state(state.evolve({"plans": {**state.plans, "welcome_pack": plan}})),
        )
    clock.set(T0 + 4 * DAY + timedelta(minutes=1))
    assert await loop.run_once() == 2  # good fired, bad failed once
    assert steps_of(await requested(platform), "good") == ["welcome", "second_purchase"]
    for _ in range(5):
        clock.advance(timedelta(hours=1))
        await loop.run_once()
    async with platform.pool.acquire() as conn:
        timer = await conn.fetchrow(
            "SELECT state, attempts, last_error FROM orchestrator_timers "
            "WHERE contact_key = 'bad' AND timer_key = 'welcome_pack/first_order'"
        )
        parked = await conn.fetch(
            "SELECT plan, reason FROM orchestrator_journal WHERE kind = 'parked'"
        )
    assert (timer["state"], timer["attempts"]) == ("parked", 3), dict(timer)
    assert "ghost" in timer["last_error"]
    assert [(r["plan"], "ghost" in r["reason"]) for r in parked] == [("welcome_pack", True)]
    assert steps_of(await requested(platform), "bad") == ["welcome"]
    clock.advance(DAY)
    assert await loop.run_once() == 0  # parked: never claimed again

    app = FastAPI()
    install_auth_handler(app)
    for router in build(platform, settings, clock=clock).routers():
        app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        body = (await client.get("/v1/plans/stats", auth=("ak-test", ""))).json()
    plans = {p["plan"]: p for p in body["plans"]}
    assert plans["welcome_pack"]["parked_timers"] == 1


async def test_alias_moves_the_anonymous_cart_plan_to_the_known_contact(
    platform: Platform,
) -> None:
    clock = FixedClock(T0)
    loop = wire(platform, OrchestratorSettings(), clock).timers
    item = LineItem(product_id="p1", name="Mug", price=Decimal(12), quantity=2)
    cart = CartChanged(cart_id="k1", items=[item], total=Decimal(24), change="product_added")
    await _handle(platform, loop, ev(cart, "anon:a1", T0), T0)
    consent = ConsentChanged(
        channel="email", purpose="marketing", status="granted", origin="identify"
    )
    await _handle(platform, loop, ev(consent, "u9", T0), T0)
    alias = ev(ContactAliased(user_id="u9", previous_id="a1"), "u9", T0 + timedelta(minutes=30))
    await _handle(platform, loop, alias, T0 + timedelta(minutes=30))
    async with platform.pool.acquire() as conn:
        timers = await conn.fetch("SELECT contact_key, timer_key FROM orchestrator_timers")
    keys = {(r["contact_key"], r["timer_key"]) for r in timers}
    assert ("u9", "abandoned_cart/cart:k1") in keys
    assert not [k for k in keys if k[0] == "anon:a1"]

    clock.set(T0 + timedelta(hours=3, minutes=1))
    assert await loop.run_once() == 1
    sent = [e for e in await requested(platform) if e.payload.plan == "abandoned_cart"]
    assert [(e.contact_key, e.payload.step) for e in sent] == [("u9", "reminder_1")]
    cart_ctx = sent[0].payload.context["cart"]
    assert isinstance(cart_ctx, dict) and cart_ctx["cart_id"] == "k1"

    # a later event under the anonymous key follows the merge
    await _handle(platform, loop, order("anon:a1", "o7", T0 + 4 * timedelta(hours=1)), clock.now())
    async with platform.pool.acquire() as conn:
        state = unpack_state(
            await conn.fetchval("SELECT packed FROM orchestrator_contacts WHERE contact_key = 'u9'")
        )
    assert state.facts.orders_count == 1


async def test_stats_count_requested_sent_opened_clicked_and_converted(
    platform: Platform, component: Component, clock: FixedClock
) -> None:
    await platform.bus.publish([order("cat", "o1", T0)])
    await wait_for(lambda: _steps(platform, "cat", 1))
    mid = welcome_id("cat")
    at = T0 + timedelta(hours=2)
    await platform.bus.publish(
        [
            ev(MessageSent(message_id=mid, channel="email"), "cat", at),
            ev(EmailOpened(message_id=mid), "cat", at),
            ev(LinkClicked(message_id=mid, url="https://shop.example/p1"), "cat", at),
            order("cat", "o2", T0 + 2 * DAY, total=55),
        ]
    )
    app = FastAPI()
    install_auth_handler(app)
    for router in component.routers():
        app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        assert (await client.get("/v1/plans/stats")).status_code == 401

        async def welcome_row() -> dict[str, Any] | None:
            response = await client.get("/v1/plans/stats", auth=("ak-test", ""))
            assert response.status_code == 200
            for plan in response.json()["plans"]:
                for step in plan["steps"]:
                    wanted = (plan["plan"], step["step"]) == ("welcome_pack", "welcome")
                    if wanted and step["converted"] == 1 and step["clicked"] == 1:
                        return dict(step)
            return None

        row = await wait_for(welcome_row)
        schema = (await client.get("/openapi.json")).json()
    assert (row["requested"], row["sent"], row["opened"], row["clicked"]) == (1, 1, 1, 1)
    assert Decimal(row["revenue"]) == Decimal(55)
    assert "PlanStatsResponse" in schema["components"]["schemas"]


async def test_an_open_naming_plan_and_step_counts_for_its_message_at_its_own_time(
    platform: Platform, component: Component, clock: FixedClock
) -> None:
    """Opens and clicks that carry a plan and step instead of a message id (what a shop's
    own tracking may send) reach the stats too, journalled when they happened."""
    await platform.bus.publish([order("eve", "o1", T0)])
    await wait_for(lambda: _steps(platform, "eve", 1))
    mid = welcome_id("eve")
    opened_at = T0 + timedelta(hours=3)
    await platform.bus.publish(
        [
            ev(MessageSent(message_id=mid, channel="email"), "eve", T0 + timedelta(minutes=1)),
            ev(EmailOpened(plan="welcome_pack", step="welcome"), "eve", opened_at),
            ev(
                LinkClicked(plan="welcome_pack", step="welcome", url="https://shop.example/p"),
                "eve",
                opened_at + timedelta(minutes=5),
            ),
        ]
    )

    async def tracked() -> list[tuple[str, str, datetime]] | None:
        async with platform.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT kind, message_id, at FROM orchestrator_journal
                   WHERE contact_key = 'eve' AND kind IN ('sent', 'opened', 'clicked')
                   ORDER BY kind"""
            )
        found = [(r["kind"], r["message_id"], r["at"]) for r in rows]
        return found if len(found) == 3 else None

    assert await wait_for(tracked) == [
        ("clicked", mid, opened_at + timedelta(minutes=5)),
        ("opened", mid, opened_at),
        ("sent", mid, T0 + timedelta(minutes=1)),
    ]
    orchestrator = wire(platform, OrchestratorSettings(), clock).orchestrator
    async with platform.pool.acquire() as conn:
        counts, _parked = await orchestrator.stats(conn, SHOP)
    (row,) = [r for r in counts if (r.plan, r.step) == ("welcome_pack", "welcome")]
    assert (row.requested, row.sent, row.opened, row.clicked) == (1, 1, 1, 1)


async def test_status_of_a_message_requested_in_the_same_batch_is_tracked_once(
    platform: Platform, clock: FixedClock
) -> None:
    """Statuses are journalled with the batch's writes, after its requests: a `sent` and
    two opens arriving in the batch that requested the message count once each."""
    orchestrator = wire(platform, OrchestratorSettings(), clock).orchestrator
    mid = welcome_id("dan")
    at = T0 + timedelta(minutes=1)
    batch = [
        order("dan", "o1", T0),
        ev(MessageSent(message_id=mid, channel="email"), "dan", at),
        ev(EmailOpened(message_id=mid), "dan", at),
        ev(EmailOpened(message_id=mid), "dan", at + timedelta(minutes=1)),
        ev(MessageSent(message_id="never-requested", channel="email"), "dan", at),
    ]
    async with platform.pool.acquire() as conn, conn.transaction():
        await orchestrator.handle_events(conn, batch, clock.now())
    async with platform.pool.acquire() as conn:
        kinds = await conn.fetch(
            "SELECT kind, count(*) AS n FROM orchestrator_journal WHERE message_id = ANY($1)"
            " GROUP BY kind ORDER BY kind",
            [mid, "never-requested"],
        )
    assert [(r["kind"], r["n"]) for r in kinds] == [("opened", 1), ("requested", 1), ("sent", 1)]


async def test_killed_after_the_outbox_write_before_publish_kafka_sends_once(
    kafka_platform: Platform,
) -> None:
    """On Kafka the outbox is a table shipped by a relay: the firing commits the staged
    event with the timer's deletion; the relay dies before publishing; a restarted
    orchestrator has nothing left to fire, a restarted relay publishes the event once."""
    platform = kafka_platform
    assert platform.relay is not None
    clock = FixedClock(T0)
    settings = OrchestratorSettings()
    first = wire(platform, settings, clock).timers
    await _handle(platform, first, order("kaf", "o1", T0), T0)
    await wait_for(lambda: _steps(platform, "kaf", 1))

    await platform.relay.stop()  # the process dies after this firing's commit
    clock.set(T0 + 4 * DAY + timedelta(seconds=1))
    assert await first.run_once() == 1
    async with platform.pool.acquire() as conn:
        staged = await conn.fetchval("SELECT count(*) FROM runtime_outbox")
    assert staged == 1
    assert await wire(platform, settings, clock).timers.run_once() == 0  # restarted

    relay = OutboxRelay(platform.pool, platform.bus)
    await relay.start()
    try:
        got = await wait_for(lambda: _steps(platform, "kaf", 2))
    finally:
        await relay.stop()
    assert [e.payload.step for e in got] == ["welcome", "second_purchase"]
    assert len({e.event_id for e in got}) == 2
