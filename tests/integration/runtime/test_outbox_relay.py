"""The outbox relay on real PostgreSQL: NOTIFY wakes it, not a timer; of several relays one
leads and publishes each row once; when the leader goes, another takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from relance_events import Event, new_event
from relance_events.payloads import EmailOpened
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.ports import OutgoingMessage
from relance_runtime.outbox import OutboxRelay, TableOutbox

pytestmark = pytest.mark.timeout(60)


class Captured:
    """A publisher that keeps what it was given."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.arrived = asyncio.Event()

    async def publish(self, events: Sequence[Event[Any]]) -> None:
        raise NotImplementedError

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        self.values.extend(m.value for m in messages)
        self.arrived.set()


def opened(n: int) -> Event[Any]:
    return new_event(
        EmailOpened(message_id=f"m-{n}"),
        shop_id="shop",
        contact_key=f"u-{n}",
        source="test",
        occurred_at=datetime.now(UTC),
    )


async def stage(pool: asyncpg.Pool, outbox: TableOutbox, events: Sequence[Event[Any]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, events)


async def test_an_idle_relay_is_woken_by_notify_not_by_its_timer(pool: asyncpg.Pool) -> None:
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")))
    captured = Captured()
    # Timers far longer than the test: only a NOTIFY can make it publish in time.
    relay = OutboxRelay(pool, captured, idle_s=600, quiet_s=600)
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


async def test_of_several_relays_one_publishes_each_row_once(pool: asyncpg.Pool) -> None:
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")))
    captured = Captured()
    relays = [OutboxRelay(pool, captured, batch_size=7, quiet_s=600) for _ in range(3)]
    for relay in relays:
        await relay.start()
    try:
        events = [opened(n) for n in range(200)]
        for start in range(0, 200, 20):
            await stage(pool, outbox, events[start : start + 20])
        deadline = asyncio.get_running_loop().time() + 20
        while len(captured.values) < 200 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert sum(relay.leading for relay in relays) == 1
    finally:
        for relay in relays:
            await relay.stop()
    assert sorted(captured.values) == sorted(to_message(e, TopicNames("")).value for e in events)


async def test_a_standby_takes_over_when_the_leader_stops(pool: asyncpg.Pool) -> None:
    outbox = TableOutbox(lambda e: to_message(e, TopicNames("")))
    first, second = Captured(), Captured()
    leader = OutboxRelay(pool, first, quiet_s=600, standby_s=0.2)
    await leader.start()
    await asyncio.sleep(0.2)
    standby = OutboxRelay(pool, second, quiet_s=600, standby_s=0.2)
    await standby.start()
    try:
        await stage(pool, outbox, [opened(1)])
        await asyncio.wait_for(first.arrived.wait(), timeout=5)
        assert (leader.leading, standby.leading) == (True, False)
        await leader.stop()
        # Staged while nobody leads: the new leader looks as soon as it takes over.
        await stage(pool, outbox, [opened(2)])
        await asyncio.wait_for(second.arrived.wait(), timeout=5)
        assert standby.leading
    finally:
        await standby.stop()
    assert len(first.values) == 1 and len(second.values) == 1
