"""`relance status`: consumer lag on both buses, and the backlogs read from service tables."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from relance_events import new_event
from relance_events.payloads import CustomTracked
from relance_events.topics import EVENTS
from relance_runtime.bus.ports import Bus, Record, TopicPartition
from relance_runtime.consumer import offsets_of
from relance_runtime.ops import Ops
from relance_runtime.ops.status import backlog

pytestmark = pytest.mark.timeout(180)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


async def consume(bus: Bus, group: str, topic: str, count: int) -> list[Record]:
    """Read `count` records as a member of `group`, commit exactly those, leave."""
    consumer = bus.consumer(group, [topic])
    await consumer.start()
    got: list[Record] = []
    try:
        deadline = asyncio.get_running_loop().time() + 40
        while len(got) < count and asyncio.get_running_loop().time() < deadline:
            got.extend(await consumer.poll(max_records=count - len(got), timeout_s=0.5))
        got = got[:count]
        await consumer.commit(offsets_of(got))
    finally:
        await consumer.stop()
    return got


async def test_lag_per_group_and_partition(ops_bus: tuple[Ops, Bus]) -> None:
    ops, bus = ops_bus
    events_topic = ops.names.of(EVENTS)
    events = [
        new_event(
            CustomTracked(name="n", properties={"i": i}),
            shop_id="shop",
            contact_key=f"c{i % 9}",
            source="test",
            occurred_at=NOW,
        )
        for i in range(60)
    ]
    await bus.publish(events)
    read = await consume(bus, "segmentation", events_topic, 25)
    assert len(read) == 25

    lag = await ops.lag()
    on_events = [x for x in lag if x.topic == events_topic]
    segmentation = [x for x in on_events if x.service == "segmentation"]
    orchestrator = [x for x in on_events if x.service == "orchestrator"]
    assert len(segmentation) == EVENTS.partitions
    assert {x.group for x in segmentation} == {ops.names.group("segmentation")}
    assert sum(x.end for x in segmentation) == 60
    assert sum(x.lag for x in segmentation) == 35
    committed = offsets_of(read)
    for x in segmentation:
        expected = committed.get(TopicPartition(x.topic, x.partition))
        assert x.committed == expected
    # A group that never committed has everything to read.
    assert all(x.committed is None for x in orchestrator)
    assert sum(x.lag for x in orchestrator) == 60
    # Services that consume nothing (ingest) have no lag rows; other topics are empty.
    assert "ingest" not in {x.service for x in lag}
    assert sum(x.lag for x in lag if x.topic != events_topic) == 0

    report = await ops.status(NOW)
    assert report.lag_error is None and report.lag is not None
    assert sum(x.lag for x in report.lag if x.service == "segmentation") == 35
    assert report.dead_letters_retained == 0
    assert report.as_json()["lag"][0]["group"].startswith(ops.names.prefix)


async def test_backlog_counts_and_absent_tables(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.executemany(
            """INSERT INTO orchestrator_timers (shop_id, contact_key, timer_key, due_at, state)
               VALUES ('shop', $1, 't', $2, $3)""",
            [
                ("a", NOW - timedelta(minutes=5), "pending"),
                ("b", NOW - timedelta(days=1), "pending"),
                ("c", NOW + timedelta(hours=1), "pending"),
                ("d", NOW - timedelta(hours=1), "parked"),
            ],
        )
        await conn.executemany(
            """INSERT INTO sender_ledger (message_id, shop_id, contact_key, channel, purpose,
                   state, created_at, updated_at)
               VALUES ($1, 'shop', 'c', 'email', 'marketing', $2, $3, $3)""",
            [("m1", "ambiguous", NOW), ("m2", "sent", NOW), ("m3", "ambiguous", NOW)],
        )
        await conn.executemany(
            """INSERT INTO feedback_alerts (alert_id, shop_id, answer_id, order_id, contact_key,
                   webhook_id, url, body, state, created_at)
               VALUES ($1, 'shop', $1, 'o', 'c', $2, 'https://support.example/h', '', $3, $4)""",
            [
                (uuid.uuid4(), "w1", "failed", NOW),
                (uuid.uuid4(), "w2", "pending", NOW),
                (uuid.uuid4(), "w3", "sent", NOW),
            ],
        )
    counts = await backlog(pool, NOW, "dlq")
    assert (counts.timers_due, counts.timers_pending, counts.timers_parked) == (2, 3, 1)
    assert counts.ambiguous_sends == 2
    assert (counts.failed_alerts, counts.pending_alerts) == (1, 1)
    assert counts.dead_letters_replayed == 0

    async with pool.acquire() as conn:
        await conn.execute("DROP TABLE sender_ledger CASCADE")
        await conn.execute("DROP TABLE feedback_alerts CASCADE")
    without = await backlog(pool, NOW, "dlq")
    assert without.ambiguous_sends is None and without.failed_alerts is None
    assert without.timers_due == 2
