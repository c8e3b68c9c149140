"""`relance dlq list|replay` on real Kafka and on the PostgreSQL log: poison a message, let a
consumer loop dead-letter it, list it, replay it, and check the original bytes come back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest

from relance_events import Event, encode, new_event
from relance_events.payloads import CustomTracked
from relance_events.topics import DEAD_LETTERS, EVENTS
from relance_runtime.bus.ports import Bus, OutgoingMessage, Record
from relance_runtime.consumer import ConsumerLoop, Delivery
from relance_runtime.errors import PermanentError
from relance_runtime.ops import LetterId, Ops, OpsError

pytestmark = pytest.mark.timeout(180)

POISON = b"not json{" + uuid.uuid4().hex.encode()


def probe(contact: str) -> Event[CustomTracked]:
    return new_event(
        CustomTracked(name="probe", properties={}),
        shop_id="shop",
        contact_key=contact,
        source="test",
        occurred_at=datetime.now(UTC),
    )


async def dead_letter(bus: Bus, group: str, rejected: set[uuid.UUID], expected: int) -> None:
    """Run a consumer loop over the events topic until it dead-lettered `expected` records."""

    async def handler(deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if d.event.event_id in rejected:
                raise PermanentError("cannot apply this contact")

    names = bus.names  # type: ignore[attr-defined]
    loop = ConsumerLoop(
        bus,
        group=group,
        topics=[names.of(EVENTS)],
        handler=handler,
        dead_letter_topic=names.of(DEAD_LETTERS),
        poll_timeout_s=0.2,
    )
    await loop.start()
    deadline = asyncio.get_running_loop().time() + 60
    while loop.stats.dead_lettered < expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await loop.stop()
    assert loop.stats.dead_lettered == expected


async def read_topic(bus: Bus, topic: str, *, at_least: int, settle_s: float = 1.0) -> list[Record]:
    """Everything in `topic`, read by a fresh group from the start."""
    consumer = bus.consumer(f"reader-{uuid.uuid4().hex[:6]}", [topic])
    await consumer.start()
    got: list[Record] = []
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + 40
        while len(got) < at_least and loop.time() < deadline:
            got.extend(await consumer.poll(max_records=500, timeout_s=0.5))
        quiet_until = loop.time() + settle_s
        while loop.time() < quiet_until:
            got.extend(await consumer.poll(max_records=500, timeout_s=0.2))
    finally:
        await consumer.stop()
    return got


async def test_dead_letters_are_listed_then_replayed_once(ops_bus: tuple[Ops, Bus]) -> None:
    ops, bus = ops_bus
    events_topic = ops.names.of(EVENTS)
    rejected = probe("c-rejected")
    poison = OutgoingMessage(
        topic=events_topic, key=b"shop\x1fc-poison", value=POISON, headers=(("x-trace", b"t1"),)
    )
    await bus.publish([probe("c-fine")])
    await bus.publish_raw([poison])
    await bus.publish([rejected])
    await dead_letter(bus, "segmentation", {rejected.event_id}, expected=2)

    letters = await ops.dead_letters(limit=10)
    assert len(letters) == 2
    by_value = {x.value: x for x in letters}
    garbage, refused = by_value[POISON], by_value[encode(rejected)]
    assert garbage.reason.startswith("undecodable")
    assert "PermanentError" in refused.reason
    assert {x.consumer_group for x in letters} == {"segmentation"}
    assert garbage.source is not None and garbage.source.topic == events_topic
    assert refused.event_type == "custom.tracked"
    assert refused.event_id == str(rejected.event_id)
    assert garbage.event_id is None
    assert all(x.replay is None for x in letters)
    # The listed source place is where the original sits.
    originals = await read_topic(bus, events_topic, at_least=3)
    at_source = next(r for r in originals if r.value == POISON)
    assert (garbage.source.partition, garbage.source.offset) == (
        at_source.partition,
        at_source.offset,
    )
    assert len(await ops.dead_letters(limit=1)) == 1

    dry = await ops.replay(dry_run=True)
    assert {x.id for x in dry.published} == {x.id for x in letters}
    assert all(x.replay is None for x in await ops.dead_letters())

    done = await ops.replay()
    assert {x.id for x in done.published} == {x.id for x in letters}
    after = await read_topic(bus, events_topic, at_least=5)
    copies = [r for r in after if r.value == POISON]
    assert len(copies) == 2  # the original and its replay
    for copy in copies:
        assert copy.key == poison.key
        assert copy.headers == poison.headers  # no dlq-* header came back
    assert sum(r.value == encode(rejected) for r in after) == 2

    again = await ops.replay()
    assert again.published == () and {x.id for x in again.already} == {x.id for x in letters}
    by_id = await ops.replay([refused.id])
    assert by_id.published == () and [x.id for x in by_id.already] == [refused.id]
    still = await read_topic(bus, events_topic, at_least=5)
    assert len(still) == len(after)

    listed = await ops.dead_letters()
    assert {x.replay.state for x in listed if x.replay} == {"published"}
    assert len([x for x in listed if x.replay]) == 2
    assert await ops.dead_letters(pending_only=True) == []


async def test_one_poison_record_dead_lettered_by_two_groups_is_replayed_once(
    ops_bus: tuple[Ops, Bus],
) -> None:
    ops, bus = ops_bus
    events_topic = ops.names.of(EVENTS)
    await bus.publish_raw([OutgoingMessage(topic=events_topic, key=b"shop\x1fc-x", value=POISON)])
    await dead_letter(bus, "segmentation", set(), expected=1)
    await dead_letter(bus, "orchestrator", set(), expected=1)
    letters = await ops.dead_letters()
    assert sorted(x.consumer_group for x in letters) == ["orchestrator", "segmentation"]

    first, second = sorted(letters, key=lambda x: x.consumer_group)
    report = await ops.replay([first.id, LetterId(0, 10_000)])
    assert [x.id for x in report.published] == [first.id]
    assert report.missing == (LetterId(0, 10_000),)
    # The other group's letter: its source record was replayed already, so it is covered.
    report = await ops.replay([second.id])
    assert report.published == () and [x.id for x in report.covered] == [second.id]
    records = await read_topic(bus, events_topic, at_least=2)
    assert sum(r.value == POISON for r in records) == 2
    states = {x.consumer_group: x.replay.state for x in await ops.dead_letters() if x.replay}
    assert states == {"orchestrator": "published", "segmentation": "covered"} or states == {
        "orchestrator": "covered",
        "segmentation": "published",
    }


async def test_replaying_needs_the_replay_table(
    ops_bus: tuple[Ops, Bus], pool: asyncpg.Pool
) -> None:
    ops, bus = ops_bus
    await bus.publish_raw([OutgoingMessage(topic=ops.names.of(EVENTS), key=b"k", value=POISON)])
    await dead_letter(bus, "feedback", set(), expected=1)
    async with pool.acquire() as conn:
        await conn.execute("DROP TABLE runtime_dlq_replays")
    listed = await ops.dead_letters()
    assert len(listed) == 1 and listed[0].replay is None
    with pytest.raises(OpsError, match="relance migrate"):
        await ops.replay()
