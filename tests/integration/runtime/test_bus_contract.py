"""One contract, two buses: real Apache Kafka and the embedded PostgreSQL log."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Sequence

import pytest

from relance_events import decode
from relance_events.topics import DEAD_LETTERS, EVENTS
from relance_runtime.bus.ports import Bus, OutgoingMessage, Record, TopicPartition
from relance_runtime.consumer import ConsumerLoop, Delivery
from relance_runtime.errors import PermanentError, RebalancedAway

from .busutil import numbered_event, poll_until, seq_of

pytestmark = pytest.mark.timeout(120)


def events_topic(bus: Bus) -> str:
    return bus.names.of(EVENTS)  # type: ignore[attr-defined, no-any-return]


async def test_one_contacts_events_arrive_in_publish_order(bus: Bus) -> None:
    contacts = [f"c{i}" for i in range(10)]
    events = [numbered_event(c, seq) for seq in range(30) for c in contacts]
    for start in range(0, len(events), 50):
        await bus.publish(events[start : start + 50])

    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:6]}", [events_topic(bus)])
    await consumer.start()
    try:
        records = await poll_until(consumer, len(events))
    finally:
        await consumer.stop()

    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        contact, seq = seq_of(record)
        seen[contact].append(seq)
    assert sorted(seen) == contacts
    for contact in contacts:
        assert seen[contact] == list(range(30)), contact


async def test_uncommitted_records_are_redelivered_after_a_crash(bus: Bus) -> None:
    events = [numbered_event(f"c{i % 7}", i) for i in range(100)]
    await bus.publish(events)
    group = f"g-{uuid.uuid4().hex[:6]}"

    first = bus.consumer(group, [events_topic(bus)])
    await first.start()
    batch = await poll_until(first, 40, commit=False)
    processed = batch[:20]
    offsets: dict[TopicPartition, int] = {}
    for record in processed:
        offsets[record.tp] = max(offsets.get(record.tp, 0), record.offset + 1)
    await first.commit(offsets)
    await first.stop()  # the rest of the batch was never committed: a crash mid-batch

    second = bus.consumer(group, [events_topic(bus)])
    await second.start()
    try:
        redelivered = await poll_until(second, 80, timeout_s=40)
    finally:
        await second.stop()

    committed_ids = {decode(r.value).event_id for r in processed}
    later_ids = {decode(r.value).event_id for r in redelivered}
    assert committed_ids | later_ids == {e.event_id for e in events}, "an event was lost"
    assert not committed_ids & later_ids, "a committed record was delivered again"


async def _run_loop_until(loop: ConsumerLoop, predicate: object, timeout_s: float = 30) -> None:
    await loop.start()
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.05)


async def test_poison_messages_are_dead_lettered_and_the_consumer_moves_on(bus: Bus) -> None:
    good_before = numbered_event("c1", 1)
    rejected = numbered_event("c1", 2)
    good_after = numbered_event("c1", 3)
    topic = events_topic(bus)
    await bus.publish([good_before])
    await bus.publish_raw([OutgoingMessage(topic=topic, key=b"shop\x1fc1", value=b"not json{")])
    await bus.publish([rejected, good_after])

    handled: list[uuid.UUID] = []

    async def handler(deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            if delivery.event.event_id == rejected.event_id:
                raise PermanentError("this contact cannot be processed")
        handled.extend(d.event.event_id for d in deliveries)

    loop = ConsumerLoop(
        bus,
        group=f"g-{uuid.uuid4().hex[:6]}",
        topics=[topic],
        handler=handler,
        dead_letter_topic=bus.names.of(DEAD_LETTERS),  # type: ignore[attr-defined]
        poll_timeout_s=0.2,
    )
    await _run_loop_until(loop, lambda: len(handled) >= 2 and loop.stats.dead_lettered >= 2)
    # The loop keeps consuming after dead-lettering.
    late = numbered_event("c1", 4)
    await bus.publish([late])
    deadline = asyncio.get_running_loop().time() + 30
    while late.event_id not in handled and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await loop.stop()

    assert handled == [good_before.event_id, good_after.event_id, late.event_id]
    assert loop.stats.dead_lettered == 2

    dlq = bus.consumer(f"dlq-{uuid.uuid4().hex[:6]}", [bus.names.of(DEAD_LETTERS)])  # type: ignore[attr-defined]
    await dlq.start()
    try:
        letters = await poll_until(dlq, 2)
    finally:
        await dlq.stop()
    by_value = {r.value: r for r in letters}
    poison = by_value[b"not json{"]
    assert (poison.header("dlq-reason") or b"").startswith(b"undecodable")
    assert poison.header("dlq-source-topic") == topic.encode()
    assert poison.header("dlq-source-offset") is not None
    original = next(r for r in letters if r.value != b"not json{")
    assert decode(original.value).event_id == rejected.event_id
    assert b"PermanentError" in (original.header("dlq-reason") or b"")
    assert original.header("event-id") == str(rejected.event_id).encode()


async def test_partitions_move_to_the_remaining_member_of_a_group(bus: Bus) -> None:
    topic = events_topic(bus)
    group = f"g-{uuid.uuid4().hex[:6]}"
    first_half = [numbered_event(f"c{i % 12}", i) for i in range(60)]
    second_half = [numbered_event(f"c{i % 12}", i) for i in range(60, 120)]
    await bus.publish(first_half)

    seen: dict[uuid.UUID, list[str]] = defaultdict(list)

    async def drain(name: str, member: object, timeout_s: float) -> None:
        records = await member.poll(max_records=500, timeout_s=timeout_s)  # type: ignore[attr-defined]
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            seen[decode(record.value).event_id].append(name)
            offsets[record.tp] = max(offsets.get(record.tp, 0), record.offset + 1)
        try:
            await member.commit(offsets)  # type: ignore[attr-defined]
        except RebalancedAway:
            pass  # another member owns these now and will redeliver them

    a = bus.consumer(group, [topic])
    await a.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(seen) < 60 and loop.time() < deadline:
        await drain("a", a, 0.5)
    assert len(seen) == 60

    b = bus.consumer(group, [topic])
    await b.start()
    deadline = loop.time() + 40
    while loop.time() < deadline:
        await asyncio.gather(drain("a", a, 0.3), drain("b", b, 0.3))
        if a.assignment() and b.assignment():
            break
    assert a.assignment() and b.assignment(), "the group never split its partitions"
    assert not a.assignment() & b.assignment()

    await bus.publish(second_half)
    await a.stop()  # a leaves: b must take every partition over from the committed offsets
    deadline = loop.time() + 40
    while loop.time() < deadline and (
        len(b.assignment()) < 12 or any(e.event_id not in seen for e in second_half)
    ):
        await drain("b", b, 0.3)
    taken_over = b.assignment()
    await b.stop()

    assert len(taken_over) == 12, "the remaining member did not take every partition"
    assert not b.assignment(), "a stopped member still claims partitions"
    missing = [e for e in first_half + second_half if e.event_id not in seen]
    assert not missing, f"{len(missing)} events were never delivered"
    assert any("b" in who for who in seen.values())


def end_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        offsets[record.tp] = max(offsets.get(record.tp, 0), record.offset + 1)
    return offsets


async def test_a_late_commit_never_moves_a_partition_back_behind_another_members(
    bus: Bus,
) -> None:
    """a polls, b joins and commits further on its share, b leaves, and only then does a
    commit what it polled first (a slow batch across two rebalances). Every partition
    must keep b's progress: a record b committed is never delivered again."""
    topic = events_topic(bus)
    group = f"g-{uuid.uuid4().hex[:6]}"
    await bus.publish([numbered_event(f"c{i % 12}", i) for i in range(60)])
    a = bus.consumer(group, [topic])
    await a.start()
    polled_by_a = await poll_until(a, 60, commit=False)
    assert len(polled_by_a) == 60
    await bus.publish([numbered_event(f"c{i % 12}", i) for i in range(60, 120)])

    b = bus.consumer(group, [topic])
    await b.start()
    committed_by_b: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while loop.time() < deadline:  # b reads its share to the end and commits it
        await a.poll(max_records=500, timeout_s=0.2)  # a stays in the group, commits nothing
        batch = await b.poll(max_records=500, timeout_s=0.2)
        await b.commit(end_offsets(batch))
        committed_by_b.extend(batch)
        if a.assignment() and b.assignment() and committed_by_b and not batch:
            break
    assert committed_by_b, "b never got a share of the partitions"
    await b.stop()
    deadline = loop.time() + 40
    while loop.time() < deadline and len(a.assignment()) < 12:
        await a.poll(max_records=500, timeout_s=0.2)
    assert len(a.assignment()) == 12, "a did not take b's partitions back"

    with contextlib.suppress(RebalancedAway):
        await a.commit(end_offsets(polled_by_a))
    await a.stop()

    c = bus.consumer(group, [topic])
    await c.start()
    try:
        redelivered = await poll_until(c, 120, timeout_s=8.0)
    finally:
        await c.stop()
    again = {(r.tp, r.offset) for r in redelivered} & {(r.tp, r.offset) for r in committed_by_b}
    assert not again, f"{len(again)} records b committed came again: a moved them back"
