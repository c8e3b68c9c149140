"""Dead letters as the consumer loop writes them, and which of them a replay publishes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_events import Event, encode, new_event
from relance_events.payloads import CustomTracked
from relance_events.topics import DEAD_LETTERS, EVENTS
from relance_runtime.bus.memory import InMemoryBus
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.ports import OutgoingMessage, Record
from relance_runtime.consumer import ConsumerLoop, Delivery
from relance_runtime.errors import PermanentError
from relance_runtime.ops.dead_letters import (
    DeadLetter,
    LetterId,
    OpsError,
    SourcePlace,
    parse_dead_letter,
    plan_replay,
)

NAMES = TopicNames("u.")
EVENTS_TOPIC = NAMES.of(EVENTS)


def an_event(contact: str = "c1") -> Event[CustomTracked]:
    return new_event(
        CustomTracked(name="probe", properties={}),
        shop_id="shop",
        contact_key=contact,
        source="test",
        occurred_at=datetime(2025, 3, 1, tzinfo=UTC),
    )


async def dead_letter_through_the_loop(bus: InMemoryBus, rejected_id: UUID) -> list[Record]:
    async def handler(deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if d.event.event_id == rejected_id:
                raise PermanentError("cannot apply")

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    loop = ConsumerLoop(
        bus,
        group="segmentation",
        topics=[EVENTS_TOPIC],
        handler=handler,
        dead_letter_topic=NAMES.of(DEAD_LETTERS),
        poll_timeout_s=0.01,
        sleep=no_wait,
    )
    await loop.start()
    for _ in range(2000):
        if loop.stats.dead_lettered >= 2:
            break
        await asyncio.sleep(0.001)
    await loop.stop()
    return bus.records(NAMES.of(DEAD_LETTERS))


async def test_letters_written_by_the_consumer_loop_parse_back_to_the_original() -> None:
    bus = InMemoryBus(NAMES)
    rejected = an_event()
    poison = OutgoingMessage(
        topic=EVENTS_TOPIC, key=b"shop\x1fc9", value=b"not json{", headers=(("x-origin", b"a"),)
    )
    await bus.publish_raw([poison])
    await bus.publish([rejected])
    records = await dead_letter_through_the_loop(bus, rejected.event_id)
    letters = {parse_dead_letter(r).value: parse_dead_letter(r) for r in records}
    assert len(letters) == 2

    garbage = letters[b"not json{"]
    assert garbage.reason.startswith("undecodable")
    assert garbage.consumer_group == "segmentation"  # the logical group
    assert garbage.source is not None and garbage.source.topic == EVENTS_TOPIC
    source_records = bus.records(EVENTS_TOPIC)
    at_source = next(r for r in source_records if r.value == b"not json{")
    assert (garbage.source.partition, garbage.source.offset) == (
        at_source.partition,
        at_source.offset,
    )
    assert garbage.event_type is None and garbage.event_id is None
    assert garbage.dead_lettered_at is not None
    assert garbage.to_message() == poison  # same topic, key, bytes and headers

    original = to_message(rejected, NAMES)
    refused = letters[encode(rejected)]
    assert "PermanentError" in refused.reason
    assert refused.event_type == "custom.tracked"
    assert refused.event_id == str(rejected.event_id)
    assert refused.to_message() == original
    assert all(not k.startswith("dlq-") for k, _ in refused.headers)


def test_an_undecodable_letter_is_identified_by_its_producer_headers() -> None:
    record = Record(
        topic="dlq",
        partition=2,
        offset=7,
        key=None,
        value=b'{"type": "order.completed", "schema_version": 99}',
        headers=(("event-type", b"order.completed"), ("event-id", b"abc"), ("dlq-reason", b"v")),
    )
    letter = parse_dead_letter(record)
    assert (letter.event_type, letter.event_id) == ("order.completed", "abc")
    assert letter.source is None
    assert letter.id == LetterId(2, 7)
    with pytest.raises(OpsError):
        letter.to_message()  # a letter without a source cannot be replayed


@given(st.integers(0, 10_000), st.integers(0, 10**12))
def test_letter_ids_round_trip(partition: int, offset: int) -> None:
    letter_id = LetterId(partition, offset)
    assert LetterId.parse(str(letter_id)) == letter_id


@given(st.sampled_from(["", "3", "a:1", "1:", ":4", "1:2:3", "-1:2", "1;2"]))
def test_malformed_ids_are_refused(text: str) -> None:
    try:
        LetterId.parse(text)
    except OpsError:
        return
    raise AssertionError(f"{text!r} was accepted")


def letter(partition: int, offset: int, source: SourcePlace | None) -> DeadLetter:
    return DeadLetter(
        id=LetterId(partition, offset),
        key=b"k",
        value=b"v",
        headers=(),
        reason="r",
        source=source,
        consumer_group="g",
        dead_lettered_at=None,
        event_type=None,
        event_id=None,
    )


places = st.builds(
    SourcePlace,
    st.sampled_from(["t.events", "t.segments", "t.other"]),
    st.integers(0, 2),
    st.integers(0, 4),
)
letters_strategy = st.lists(
    st.builds(letter, st.integers(0, 2), st.integers(0, 30), st.one_of(st.none(), places)),
    max_size=40,
)


@given(
    letters_strategy,
    st.sets(st.builds(LetterId, st.integers(0, 2), st.integers(0, 30))),
    st.sets(places),
)
def test_a_source_record_is_published_at_most_once_ever(
    letters: list[DeadLetter], replayed: set[LetterId], replayed_sources: set[SourcePlace]
) -> None:
    topics = {"t.events", "t.segments"}
    plan = plan_replay(letters, replayed=replayed, replayed_sources=replayed_sources, topics=topics)
    published_sources = [x.source for x in plan.publish]
    assert len(published_sources) == len(set(published_sources))
    assert not set(published_sources) & replayed_sources
    assert all(x.id not in replayed for x in plan.publish + plan.covered)
    assert all(x.source is not None and x.source.topic in topics for x in plan.publish)
    # every covered letter's source is published now or was before
    for x in plan.covered:
        assert x.source in set(published_sources) | replayed_sources
    # each distinct letter lands in exactly one bucket
    buckets = [
        *(x.id for x in plan.publish),
        *(x.id for x in plan.covered),
        *(x.id for x in plan.already),
        *(x.id for x, _ in plan.unreplayable),
    ]
    assert sorted(buckets, key=str) == sorted({x.id for x in letters}, key=str)


def test_replays_keep_source_order_and_merge_groups() -> None:
    first = SourcePlace("t.events", 1, 5)
    second = SourcePlace("t.events", 1, 9)
    letters = [letter(0, 3, second), letter(2, 0, first), letter(1, 4, first)]
    plan = plan_replay(letters, replayed=set(), replayed_sources=set(), topics={"t.events"})
    assert [x.source for x in plan.publish] == [first, second]
    assert [x.id for x in plan.covered] == [LetterId(2, 0)]
