"""Durable timers on real PostgreSQL: exactly-once firing across crashes and workers, and
no lost update when a timer races an event for the same contact."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from relance_events import Event, encode, new_event
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactAliased,
    EmailOpened,
    LineItem,
    OrderCompleted,
)
from relance_orchestrator.adapters.postgres_timers import PostgresContactStore
from relance_orchestrator.adapters.state_codec import unpack_state
from relance_orchestrator.services import Orchestrator

from .support import handle, order_event

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
D = timedelta(days=1)


class TableOutbox:
    async def add(self, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> None:
        await conn.executemany(
            "INSERT INTO test_outbox (event_id, message_id, body) VALUES ($1, $2, $3::jsonb)",
            [(e.event_id, e.payload.message_id, encode(e).decode()) for e in events],
        )


class CrashingOutbox(TableOutbox):
    """Writes, then the process 'dies': the backend is killed before the commit."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def add(self, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> None:
        await super().add(conn, events)
        killer = await asyncpg.connect(self.dsn)
        await killer.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        await killer.close()


async def _outbox(dsn: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    rows = await conn.fetch("SELECT message_id, body::text FROM test_outbox ORDER BY message_id")
    await conn.close()
    return [(r[0], orjson.loads(r[1])["payload"]["step"]) for r in rows]


async def test_event_schedules_timers_and_firing_requests_once(
    db: str, orchestrator_on: Callable[..., Orchestrator]
) -> None:
    orch = orchestrator_on(TableOutbox())
    await handle(db, orch, order_event("c1", "o1", T0), T0)
    assert [step for _, step in await _outbox(db)] == ["welcome"]
    conn = await asyncpg.connect(db)
    timers = dict(await conn.fetch("SELECT timer_key, due_at FROM orchestrator_timers"))
    assert timers["welcome_pack/first_order"] == T0 + 4 * D
    assert await orch.fire_due(conn, T0 + 4 * D - timedelta(seconds=1)) == 0  # before due
    assert await orch.fire_due(conn, T0 + 4 * D) == 1
    assert await orch.fire_due(conn, T0 + 4 * D) == 0
    steps = sorted(step for _, step in await _outbox(db))
    assert steps == ["second_purchase", "welcome"]
    await conn.close()


async def test_crash_inside_the_firing_transaction_fires_once_in_effect(
    db: str, orchestrator_on: Callable[..., Orchestrator]
) -> None:
    await handle(db, orchestrator_on(TableOutbox()), order_event("c1", "o1", T0), T0)
    crashing = orchestrator_on(CrashingOutbox(db))
    conn = await asyncpg.connect(db)
    crashed = False
    try:
        await crashing.fire_due(conn, T0 + 4 * D)
    except Exception:  # whatever the dead connection raises, nothing may have committed
        crashed = True
    assert crashed
    assert [s for _, s in await _outbox(db)] == ["welcome"]  # rolled back with the timer
    conn = await asyncpg.connect(db)
    healthy = orchestrator_on(TableOutbox())
    assert await healthy.fire_due(conn, T0 + 4 * D) == 1
    # after the outbox write committed (crash before publish): nothing is due any more
    assert await healthy.fire_due(conn, T0 + 4 * D) == 0
    assert sorted(s for _, s in await _outbox(db)) == ["second_purchase", "welcome"]
    await conn.close()


async def test_several_workers_fire_each_timer_exactly_once(
    db: str, orchestrator_on: Callable[..., Orchestrator]
) -> None:
    orch = orchestrator_on(TableOutbox())
    for i in range(60):
        await handle(db, orch, order_event(f"c{i}", f"o{i}", T0), T0)

    async def worker() -> int:
        conn = await asyncpg.connect(db)
        fired = 0
        try:
            while True:
                n = await orch.fire_due(conn, T0 + 4 * D, limit=7)
                if n == 0:
                    left = await conn.fetchval(
                        "SELECT count(*) FROM orchestrator_timers WHERE due_at <= $1", T0 + 4 * D
                    )
                    if left == 0:
                        return fired
                    await asyncio.sleep(0.01)
                fired += n
        finally:
            await conn.close()

    counts = await asyncio.gather(*(worker() for _ in range(4)))
    assert sum(counts) == 60
    rows = await _outbox(db)
    assert len([s for _, s in rows if s == "second_purchase"]) == 60
    assert len({m for m, _ in rows}) == len(rows)


async def test_timer_racing_an_event_loses_no_update(
    db: str, orchestrator_on: Callable[..., Orchestrator]
) -> None:
    orch = orchestrator_on(TableOutbox())
    await handle(db, orch, order_event("c1", "o1", T0), T0)
    due = T0 + 4 * D
    event_conn = await asyncpg.connect(db)
    tx = event_conn.transaction()
    await tx.start()
    opened = new_event(
        EmailOpened(plan="welcome_pack", step="welcome"),
        shop_id="shop",
        contact_key="c1",
        source="test",
        occurred_at=due - timedelta(hours=1),
    )
    await orch.handle_event(event_conn, opened, due - timedelta(hours=1))  # locks c1's row
    timer_conn = await asyncpg.connect(db)
    assert await orch.fire_due(timer_conn, due) == 0  # skipped, not blocked, not lost
    await tx.commit()
    assert await orch.fire_due(timer_conn, due) == 1
    state = unpack_state(await timer_conn.fetchval("SELECT packed FROM orchestrator_contacts"))
    sends = state.facts.sends
    assert [s.step for s in sends] == ["welcome", "second_purchase"]
    assert sends[0].opened_at is not None  # the event's update survived the timer's
    await event_conn.close()
    await timer_conn.close()


class RefusingContacts(PostgresContactStore):
    """Real store; PostgreSQL refuses any write that includes the contact `bad` (as it
    would refuse a state it cannot store), so the batch must fall back contact by contact."""

    async def save_many(self, conn: asyncpg.Connection, states: Sequence[Any]) -> None:
        if any(s.contact_key == "bad" for s in states):
            await conn.execute("SELECT 1 / 0")  # a real, non-transient PostgreSQL error
        await super().save_many(conn, states)


async def test_a_batch_write_refused_for_one_contact_fires_the_others(
    db: str, orchestrator_on: Callable[..., Orchestrator]
) -> None:
    orch = orchestrator_on(TableOutbox())
    for contact in ("a", "bad", "z"):
        await handle(db, orch, order_event(contact, f"o-{contact}", T0), T0)
    refusing = dataclasses.replace(orch, contacts=RefusingContacts())
    conn = await asyncpg.connect(db)
    try:
        assert await refusing.fire_due(conn, T0 + 4 * D) == 3  # 2 fired, 1 failed
        failed = await conn.fetchrow(
            "SELECT attempts, last_error, retry_at FROM orchestrator_timers "
            "WHERE contact_key = 'bad' AND timer_key = 'welcome_pack/first_order'"
        )
        fired = await conn.fetch(
            "SELECT contact_key FROM orchestrator_timers "
            "WHERE timer_key = 'welcome_pack/first_order' ORDER BY 1"
        )
        versions = dict(await conn.fetch("SELECT contact_key, version FROM orchestrator_contacts"))
    finally:
        await conn.close()
    assert failed["attempts"] == 1 and "DivisionByZero" in failed["last_error"]
    assert failed["retry_at"] > T0 + 4 * D
    assert [r[0] for r in fired] == ["bad"]  # the others' timers were consumed
    assert versions["bad"] == versions["a"] - 1  # bad's state was not written
    second = sorted(c for c, s in await _outbox_contacts(db) if s == "second_purchase")
    assert second == ["a", "z"]


async def _outbox_contacts(dsn: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    rows = await conn.fetch("SELECT body::text FROM test_outbox")
    await conn.close()
    bodies = [orjson.loads(r[0]) for r in rows]
    return [(b["contact_key"], b["payload"]["step"]) for b in bodies]


def _story() -> list[Event[Any]]:
    """Several contacts, repeated contacts, an anonymous cart then its alias, an objection."""
    item = LineItem(product_id="p1", name="Mug", price=Decimal(12), quantity=2)

    def ev(payload: Any, key: str, minutes: int) -> Event[Any]:
        at = T0 + timedelta(minutes=minutes)
        return new_event(payload, shop_id="shop", contact_key=key, source="t", occurred_at=at)

    granted = ConsentChanged(
        channel="email", purpose="marketing", status="granted", origin="identify"
    )
    denied = ConsentChanged(
        channel="email", purpose="marketing", status="denied", origin="unsubscribe_link"
    )
    cart = CartChanged(cart_id="k1", items=[item], total=Decimal(24), change="product_added")
    return [
        ev(granted, "ann", 0),
        ev(cart, "anon:v1", 1),
        ev(OrderCompleted(order_id="o1", total=Decimal(90)), "ann", 2),
        ev(granted, "bob", 3),
        ev(OrderCompleted(order_id="o2", total=Decimal(20)), "bob", 4),
        ev(ContactAliased(user_id="cid", previous_id="v1"), "cid", 5),
        ev(granted, "cid", 6),
        ev(cart, "anon:v1", 7),  # follows the merge to cid
        ev(OrderCompleted(order_id="o3", total=Decimal(35)), "ann", 8),
        ev(denied, "bob", 9),
        ev(OrderCompleted(order_id="o1", total=Decimal(90)), "ann", 10),  # a replay: no change
    ]


async def _snapshot(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "states": {
                r[0]: unpack_state(r[1])
                for r in await conn.fetch("SELECT contact_key, packed FROM orchestrator_contacts")
            },
            "timers": sorted(
                tuple(r)
                for r in await conn.fetch(
                    "SELECT contact_key, timer_key, due_at, state FROM orchestrator_timers"
                )
            ),
            "journal": sorted(
                (tuple(str(v) for v in r))
                for r in await conn.fetch(
                    "SELECT contact_key, kind, plan, step, plan_instance, message_id, reason,"
                    " amount, at FROM orchestrator_journal"
                )
            ),
            "requested": sorted(
                r[0] for r in await conn.fetch("SELECT body::text FROM test_outbox")
            ),
        }
    finally:
        await conn.close()


async def _reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "TRUNCATE orchestrator_contacts, orchestrator_timers, orchestrator_journal,"
        " orchestrator_orders, test_outbox"
    )
    await conn.close()


async def test_a_batch_leaves_exactly_what_one_event_at_a_time_leaves(
    db: str, orchestrator_on: Callable[..., Orchestrator]
) -> None:
    orch = orchestrator_on(TableOutbox())
    events = _story()
    now = T0 + timedelta(minutes=30)
    for event in events:
        await handle(db, orch, event, now)
    one_by_one = await _snapshot(db)
    await _reset(db)
    conn = await asyncpg.connect(db)
    try:
        async with conn.transaction():
            await orch.handle_events(conn, events, now)
    finally:
        await conn.close()
    batched = await _snapshot(db)
    assert batched == one_by_one
    assert set(one_by_one["states"]) == {"ann", "bob", "cid", "anon:v1"}
    assert one_by_one["states"]["anon:v1"].merged_into == "cid"
    assert any(t[0] == "cid" and t[1].startswith("abandoned_cart/") for t in batched["timers"])
    assert len(batched["requested"]) >= 3  # welcome for ann and bob, and cid's signup welcome


async def test_an_event_that_changes_nothing_does_not_rewrite_the_state(
    db: str, orchestrator_on: Callable[..., Orchestrator]
) -> None:
    orch = orchestrator_on(TableOutbox())
    await handle(db, orch, order_event("c1", "o1", T0), T0)
    conn = await asyncpg.connect(db)
    try:
        before = await conn.fetchrow(
            "SELECT version, packed FROM orchestrator_contacts WHERE contact_key = 'c1'"
        )
        async with conn.transaction():  # the same order again, in a batch, then alone
            await orch.handle_events(conn, [order_event("c1", "o1", T0)], T0 + D)
        await handle(db, orch, order_event("c1", "o1", T0), T0 + D)
        after = await conn.fetchrow(
            "SELECT version, packed FROM orchestrator_contacts WHERE contact_key = 'c1'"
        )
        assert tuple(after) == tuple(before)
        async with conn.transaction():  # a new order is written as before
            await orch.handle_events(conn, [order_event("c1", "o2", T0 + D)], T0 + D)
        assert (
            await conn.fetchval(
                "SELECT version FROM orchestrator_contacts WHERE contact_key = 'c1'"
            )
            == before["version"] + 1
        )
    finally:
        await conn.close()
