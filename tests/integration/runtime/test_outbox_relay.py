"""The outbox relay on real PostgreSQL: its own process's NOTIFY wakes it, not a timer; of
several relays each row is published once, a topic's rows in the order they were staged;
rows of a process that died still leave; rows staged while another relay publishes their
topic leave right after it; a topic never waits for another topic's relay; a refused
publish leaves the rows and the lane as they were."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from asyncpg.transaction import Transaction

from relance_events import Event, Publishable, new_event
from relance_events.payloads import EmailOpened, MessageSent
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.ports import OutgoingMessage
from relance_runtime.errors import BusUnavailable
from relance_runtime.outbox import OutboxRelay, TableOutbox, lane_lock

pytestmark = pytest.mark.timeout(60)


class Captured:
    """A publisher that keeps what it was given."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.topics: list[str] = []
        self.arrived = asyncio.Event()

    async def publish(self, events: Sequence[Publishable]) -> None:
        raise NotImplementedError

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        self.values.extend(m.value for m in messages)
        self.topics.extend(m.topic for m in messages)
        self.arrived.set()


def opened(n: int) -> Event[Any]:
    return new_event(
        EmailOpened(message_id=f"m-{n}"),
        shop_id="shop",
        contact_key=f"u-{n}",
        source="test",
        occurred_at=datetime.now(UTC),
    )


def sent(n: int) -> Event[Any]:
    """An event of another topic than `opened`'s."""
    return new_event(
        MessageSent(message_id=f"r-{n}", channel="email"),
        shop_id="shop",
        contact_key=f"u-{n}",
        source="test",
        occurred_at=datetime.now(UTC),
    )


OPENED_TOPIC = to_message(opened(0), TopicNames("")).topic


@asynccontextmanager
async def three_processes(
    pool: asyncpg.Pool, captured: Captured, *, batch_size: int
) -> AsyncIterator[list[TableOutbox]]:
    """Three processes' outboxes, each with its relay running (stopped after the block)."""
    tokens = ["p1", "p2", "p3"]
    relays = [
        OutboxRelay(pool, captured, token=t, batch_size=batch_size, quiet_s=600) for t in tokens
    ]
    for relay in relays:
        await relay.start()
    try:
        yield [TableOutbox(lambda e: to_message(e, TopicNames("")), relay_token=t) for t in tokens]
    finally:
        for relay in relays:
            await relay.stop()


@asynccontextmanager
async def holding(pool: asyncpg.Pool, lock: int) -> AsyncIterator[Transaction]:
    """Another relay, as the database sees it: a transaction holding `lock` until the
    test rolls it back (or the block ends)."""
    holder = await pool.acquire()
    transaction = holder.transaction()
    await transaction.start()
    try:
        await holder.execute("SELECT pg_advisory_xact_lock($1)", lock)
        yield transaction
    finally:
        with contextlib.suppress(asyncpg.InterfaceError):  # unless the test rolled it back
            await transaction.rollback()
        await pool.release(holder)


async def stage(pool: asyncpg.Pool, outbox: TableOutbox, events: Sequence[Event[Any]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, events)


async def test_an_idle_relay_is_woken_by_notify_not_by_its_timer(pool: asyncpg.Pool) -> None:
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")), relay_token="p1")
    captured = Captured()
    # Timers far longer than the test: only a NOTIFY can make it publish in time.
    relay = OutboxRelay(pool, captured, token="p1", idle_s=600, quiet_s=600)
    await relay.start()
    try:
        await asyncio.sleep(0.3)  # the relay found the outbox empty and waits
        for round_ in range(3):
            captured.arrived.clear()
            started = asyncio.get_running_loop().time()
            await stage(pool, outbox, [opened(round_)])
            await asyncio.wait_for(captured.arrived.wait(), timeout=5)
            assert asyncio.get_running_loop().time() - started < 2
    finally:
        await relay.stop()
    assert len(captured.values) == 3
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM runtime_outbox") == 0


async def test_a_relay_sleeps_through_other_processes_writes_but_ships_orphans(
    pool: asyncpg.Pool,
) -> None:
    """Another process's NOTIFY does not wake this relay (that process ships its own);
    if that process died before shipping, the periodic look ships its rows."""
    ours = TableOutbox(lambda e: to_message(e, TopicNames("")), relay_token="alive")
    theirs = TableOutbox(lambda e: to_message(e, TopicNames("")), relay_token="dead")
    captured = Captured()
    relay = OutboxRelay(pool, captured, token="alive", idle_s=600, quiet_s=600)
    await relay.start()
    try:
        await stage(pool, ours, [opened(1)])  # once shipped, the relay is waiting
        await asyncio.wait_for(captured.arrived.wait(), timeout=5)
        await asyncio.sleep(0.3)  # it looks once more (finding nothing), then waits
        captured.arrived.clear()
        await stage(pool, theirs, [opened(2)])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(captured.arrived.wait(), timeout=0.5)
    finally:
        await relay.stop()
    assert len(captured.values) == 1
    looker = OutboxRelay(pool, captured, token="alive", idle_s=600, quiet_s=0.3)
    await looker.start()
    try:
        await asyncio.wait_for(captured.arrived.wait(), timeout=5)
    finally:
        await looker.stop()
    assert len(captured.values) == 2


async def test_of_several_relays_each_row_is_published_once(pool: asyncpg.Pool) -> None:
    captured = Captured()
    async with three_processes(pool, captured, batch_size=7) as outboxes:
        events = [opened(n) for n in range(300)]
        await asyncio.gather(
            *(
                stage(pool, outboxes[(start // 20) % 3], events[start : start + 20])
                for start in range(0, 300, 20)
            )
        )
        deadline = asyncio.get_running_loop().time() + 20
        while len(captured.values) < 300 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    assert sorted(captured.values) == sorted(to_message(e, TopicNames("")).value for e in events)


async def test_rows_staged_while_another_relay_publishes_leave_right_after_it(
    pool: asyncpg.Pool,
) -> None:
    captured = Captured()
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")), relay_token="p1")
    # Neither timer can ship the row within the test: only waiting for the lock can.
    relay = OutboxRelay(pool, captured, token="p1", idle_s=600, quiet_s=600)
    async with holding(pool, lane_lock(OPENED_TOPIC)) as other_relay:
        await relay.start()
        try:
            await stage(pool, outbox, [opened(1)])
            await asyncio.sleep(0.3)
            assert captured.values == []  # the other relay still holds the lane
            await other_relay.rollback()  # ... and is done
            await asyncio.wait_for(captured.arrived.wait(), timeout=5)
        finally:
            await relay.stop()
    assert len(captured.values) == 1


async def test_a_relay_stuck_behind_a_lock_gives_up_and_stays_healthy(pool: asyncpg.Pool) -> None:
    captured = Captured()
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")), relay_token="p1")
    await stage(pool, outbox, [opened(1)])
    relay = OutboxRelay(pool, captured, token="p1", lock_wait_s=0.2)
    async with holding(pool, lane_lock(OPENED_TOPIC)):
        assert await relay.relay_once() == 0
    assert relay.healthy
    assert await relay.relay_once() == 1  # the missed lane is looked at again


async def test_a_topic_does_not_wait_for_another_topics_relay(pool: asyncpg.Pool) -> None:
    """A relay publishing one topic (held here for the whole test) does not delay the rows
    of another topic."""
    captured = Captured()
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")), relay_token="p1")
    relay = OutboxRelay(pool, captured, token="p1", idle_s=600, quiet_s=600, lock_wait_s=30)
    async with holding(pool, lane_lock(OPENED_TOPIC)) as other_relay:
        await relay.start()
        try:
            await stage(pool, outbox, [sent(1)])
            await asyncio.wait_for(captured.arrived.wait(), timeout=5)
            assert captured.topics == [to_message(sent(1), TopicNames("")).topic]
            captured.arrived.clear()
            await stage(pool, outbox, [opened(2)])
            await asyncio.sleep(0.3)
            assert len(captured.values) == 1  # the held topic waits for its holder ...
            await other_relay.rollback()
            await asyncio.wait_for(captured.arrived.wait(), timeout=5)  # ... and only for it
        finally:
            await relay.stop()
    assert captured.topics[1:] == [OPENED_TOPIC]


async def test_a_relay_of_an_earlier_version_excludes_every_relay(pool: asyncpg.Pool) -> None:
    """During an upgrade, a relay that still takes the one outbox lock exclusively and the
    relays with lanes never publish at the same time."""
    captured = Captured()
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")), relay_token="p1")
    await stage(pool, outbox, [opened(1), sent(2)])
    relay = OutboxRelay(pool, captured, token="p1", lock_wait_s=0.2)
    async with holding(pool, OutboxRelay._RELAY_LOCK):
        assert await relay.relay_once() == 0
    assert await relay.relay_once() == 2


async def test_a_topics_rows_leave_in_the_order_they_were_staged(pool: asyncpg.Pool) -> None:
    """Several processes stage into two topics; three relays with small batches publish:
    each topic's rows come out in staging order, each once."""
    captured = Captured()
    async with three_processes(pool, captured, batch_size=5) as outboxes:
        staged: list[Event[Any]] = []
        for n in range(60):  # one transaction at a time: the staging order is known
            events = [opened(n), sent(n)] if n % 2 else [sent(n)]
            staged.extend(events)
            await stage(pool, outboxes[n % 3], events)
        deadline = asyncio.get_running_loop().time() + 20
        while len(captured.values) < len(staged) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    for topic in {OPENED_TOPIC, to_message(sent(0), TopicNames("")).topic}:
        expected = [
            m.value for m in (to_message(e, TopicNames("")) for e in staged) if m.topic == topic
        ]
        got = [v for v, t in zip(captured.values, captured.topics, strict=True) if t == topic]
        assert got == expected


class Refusing(Captured):
    """A bus that refuses every publish."""

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        raise BusUnavailable("the broker is away")


async def test_a_refused_publish_keeps_the_rows_and_frees_the_lane(pool: asyncpg.Pool) -> None:
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")))
    await stage(pool, outbox, [opened(1), opened(2)])
    resets: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: resets.append(context))
    try:
        with pytest.raises(BusUnavailable):
            await OutboxRelay(pool, Refusing()).relay_once()
    finally:
        loop.set_exception_handler(previous)
    # rolled back by the relay itself (asyncpg reports a reset of an open transaction)
    assert resets == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM runtime_outbox") == 2
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", lane_lock(OPENED_TOPIC))
        await conn.execute("SELECT pg_advisory_unlock_all()")
    captured = Captured()
    assert await OutboxRelay(pool, captured).relay_once() == 2
    assert len(captured.values) == 2
