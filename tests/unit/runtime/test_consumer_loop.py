"""The consumer loop's policy on the in-memory bus: commits, retries, dead letters, stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest

from relance_events import new_event
from relance_events.payloads import EmailOpened
from relance_events.topics import DEAD_LETTERS, EVENTS
from relance_runtime.bus.memory import InMemoryBus
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.ports import OutgoingMessage, TopicPartition
from relance_runtime.consumer import ConsumerLoop, Delivery, is_transient
from relance_runtime.errors import BusUnavailable, PermanentError, TransientError

from ...integration.runtime.busutil import numbered_event

NAMES = TopicNames("u.")
SLEPT: list[float] = []


async def fake_sleep(seconds: float) -> None:
    SLEPT.append(seconds)
    await asyncio.sleep(0)


def make_loop(bus: InMemoryBus, handler: object, **kwargs: object) -> ConsumerLoop:
    return ConsumerLoop(
        bus,
        group="g",
        topics=[NAMES.of(EVENTS)],
        handler=handler,  # type: ignore[arg-type]
        dead_letter_topic=NAMES.of(DEAD_LETTERS),
        poll_timeout_s=0.01,
        sleep=fake_sleep,
        **{"commit_interval_s": 0.0, **kwargs},  # type: ignore[arg-type]
    )


async def run_until(loop: ConsumerLoop, done: object) -> None:
    await loop.start()
    for _ in range(2000):
        if done():  # type: ignore[operator]
            break
        await asyncio.sleep(0.001)
    await loop.stop()


def committed(bus: InMemoryBus) -> int:
    return sum(offset for (group, _), offset in bus.committed.items() if group == NAMES.group("g"))


async def test_offsets_are_committed_only_after_the_handler_succeeded() -> None:
    bus = InMemoryBus(NAMES)
    await bus.publish([numbered_event("c", i) for i in range(20)])
    seen: list[int] = []

    async def handler(deliveries: Sequence[Delivery]) -> None:
        assert committed(bus) == len(seen), "offsets moved before the effect was durable"
        seen.extend(range(len(deliveries)))

    loop = make_loop(bus, handler)
    await run_until(loop, lambda: committed(bus) == 20)
    assert committed(bus) == 20
    assert len(seen) == 20
    assert loop.stats.processed == 20


async def test_transient_failures_are_retried_with_backoff_and_never_dead_lettered() -> None:
    bus = InMemoryBus(NAMES)
    await bus.publish([numbered_event("c", 1)])
    attempts = 0

    async def flaky(deliveries: Sequence[Delivery]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 6:
            raise asyncpg.CannotConnectNowError("database restarting")

    SLEPT.clear()
    loop = make_loop(bus, flaky)
    await run_until(loop, lambda: loop.stats.processed == 1)
    assert attempts == 6
    assert loop.stats.dead_lettered == 0
    assert len(SLEPT) == 5
    assert sorted(SLEPT) == SLEPT or max(SLEPT) <= 30, "backoff grows and is capped"


async def test_one_bad_event_is_isolated_and_dead_lettered_others_pass() -> None:
    bus = InMemoryBus(NAMES)
    events = [numbered_event("c", i) for i in range(5)]
    await bus.publish(events)
    bad = events[2].event_id
    applied: list[object] = []

    async def handler(deliveries: Sequence[Delivery]) -> None:
        if any(d.event.event_id == bad for d in deliveries):
            raise KeyError("a bug that only this event triggers")
        applied.extend(d.event.event_id for d in deliveries)

    loop = make_loop(bus, handler, max_attempts=3)
    await run_until(loop, lambda: committed(bus) == 5)
    assert applied == [e.event_id for e in events if e.event_id != bad]
    letters = bus.records(NAMES.of(DEAD_LETTERS))
    assert len(letters) == 1
    assert b"KeyError" in (letters[0].header("dlq-reason") or b"")
    assert letters[0].header("dlq-consumer-group") == b"g"


async def test_permanent_errors_are_not_retried() -> None:
    bus = InMemoryBus(NAMES)
    await bus.publish([numbered_event("c", 1)])
    calls = 0

    async def handler(deliveries: Sequence[Delivery]) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("contact erased")

    loop = make_loop(bus, handler)
    await run_until(loop, lambda: loop.stats.dead_lettered == 1)
    assert calls == 1
    assert committed(bus) == 1


async def test_undecodable_bytes_go_to_the_dead_letter_topic_with_their_origin() -> None:
    bus = InMemoryBus(NAMES)
    await bus.publish_raw([OutgoingMessage(NAMES.of(EVENTS), b"k", b"\xff\xfe")])
    loop = make_loop(bus, lambda deliveries: asyncio.sleep(0))
    await run_until(loop, lambda: loop.stats.dead_lettered == 1)
    (letter,) = bus.records(NAMES.of(DEAD_LETTERS))
    assert letter.value == b"\xff\xfe"
    assert letter.key == b"k"
    assert letter.header("dlq-source-offset") == b"0"


async def test_stop_abandons_a_batch_that_cannot_finish_and_commits_nothing_for_it() -> None:
    bus = InMemoryBus(NAMES)
    await bus.publish([numbered_event("c", 1)])
    started = asyncio.Event()

    async def stuck(deliveries: Sequence[Delivery]) -> None:
        started.set()
        await asyncio.sleep(3600)

    loop = make_loop(bus, stuck, drain_timeout_s=0.05)
    await loop.start()
    await asyncio.wait_for(started.wait(), 5)
    await loop.stop()
    assert committed(bus) == 0
    assert not loop.running


async def test_a_dead_letter_publish_that_fails_is_retried_not_skipped() -> None:
    bus = InMemoryBus(NAMES)
    await bus.publish_raw([OutgoingMessage(NAMES.of(EVENTS), b"k", b"junk")])
    bus.available = False
    loop = make_loop(bus, lambda deliveries: asyncio.sleep(0))
    await loop.start()
    for _ in range(50):
        await asyncio.sleep(0.001)
    assert committed(bus) == 0, "the poison record was committed although not dead-lettered"
    bus.available = True
    for _ in range(2000):
        if committed(bus) == 1:
            break
        await asyncio.sleep(0.001)
    await loop.stop()
    assert committed(bus) == 1
    assert len(bus.records(NAMES.of(DEAD_LETTERS))) == 1


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TransientError("x"), True),
        (BusUnavailable("x"), True),
        (asyncpg.DeadlockDetectedError("x"), True),
        (ConnectionResetError(), True),
        (PermanentError("x"), False),
        (ValueError("x"), False),
    ],
)
def test_transient_classification(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_in_memory_assignment_splits_and_covers_all_partitions() -> None:
    bus = InMemoryBus(NAMES)
    a, b = bus.consumer("g", [NAMES.of(EVENTS)]), bus.consumer("g", [NAMES.of(EVENTS)])
    asyncio.run(a.start())
    asyncio.run(b.start())
    assert not a.assignment() & b.assignment()
    assert len(a.assignment() | b.assignment()) == EVENTS.partitions
    assert TopicPartition(NAMES.of(EVENTS), 0) in a.assignment() | b.assignment()


async def test_unwanted_event_types_are_skipped_by_header_and_still_committed() -> None:
    """A subscription's event types: others never reach the handler nor get decoded (their
    bytes here are not even an event), a record without the header is decoded as always."""
    bus = InMemoryBus(NAMES)
    wanted = numbered_event("c", 1)
    await bus.publish([wanted])
    await bus.publish_raw(
        [
            OutgoingMessage(NAMES.of(EVENTS), b"k", b"not json", (("event-type", b"cart.x"),)),
            OutgoingMessage(NAMES.of(EVENTS), b"k", b"\xff", (("event-type", b"order.x"),)),
        ]
    )
    # Another type, without its header: decoded and handed over (the handler decides).
    headerless = new_event(
        EmailOpened(message_id="m-1"),
        shop_id="shop",
        contact_key="c",
        source="test",
        occurred_at=datetime.now(UTC),
    )
    message = to_message(headerless, NAMES)
    await bus.publish_raw([OutgoingMessage(message.topic, message.key, message.value)])
    seen: list[str] = []

    async def handler(deliveries: Sequence[Delivery]) -> None:
        seen.extend(str(d.event.event_id) for d in deliveries)

    loop = make_loop(bus, handler, event_types=frozenset({wanted.type}))
    await run_until(loop, lambda: committed(bus) == 4)
    assert committed(bus) == 4
    assert seen == [str(wanted.event_id), str(headerless.event_id)]
    assert (loop.stats.skipped_unwanted, loop.stats.dead_lettered) == (2, 0)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_offsets_are_committed_at_most_every_interval_and_on_stop() -> None:
    bus = InMemoryBus(NAMES)
    ticks = Ticks()
    handled: list[int] = []

    async def handler(deliveries: Sequence[Delivery]) -> None:
        assert committed(bus) <= len(handled), "offsets moved before the effect was durable"
        handled.extend(range(len(deliveries)))

    loop = make_loop(bus, handler, commit_interval_s=1.0, monotonic=ticks, batch_size=5)
    await loop.start()
    await bus.publish([numbered_event("c", i) for i in range(20)])
    for _ in range(2000):
        if len(handled) == 20:
            break
        await asyncio.sleep(0.001)
    assert len(handled) == 20
    assert committed(bus) == 0  # four batches handled, the interval has not passed
    ticks.now = 1.0
    for _ in range(2000):  # the next (idle) poll commits all four at once
        if committed(bus) == 20:
            break
        await asyncio.sleep(0.001)
    assert committed(bus) == 20
    await bus.publish([numbered_event("c", i) for i in range(20, 23)])
    for _ in range(2000):
        if len(handled) == 23:
            break
        await asyncio.sleep(0.001)
    assert committed(bus) == 20
    await loop.stop()  # what was handled is committed before leaving the group
    assert committed(bus) == 23


async def test_a_failed_commit_is_retried_with_the_next_one() -> None:
    bus = InMemoryBus(NAMES)
    loop = make_loop(bus, lambda deliveries: asyncio.sleep(0))
    await loop.start()
    consumer = None
    for _ in range(2000):
        consumer = loop._consumer
        if consumer is not None:
            break
        await asyncio.sleep(0.001)
    assert consumer is not None
    real_commit = consumer.commit
    failures = [TransientError("broker away")]

    async def flaky(offsets: object) -> None:
        if failures:
            raise failures.pop()
        await real_commit(offsets)  # type: ignore[arg-type]

    consumer.commit = flaky  # type: ignore[method-assign]
    await bus.publish([numbered_event("c", i) for i in range(4)])
    for _ in range(2000):
        if committed(bus) == 4:
            break
        await asyncio.sleep(0.001)
    await loop.stop()
    assert committed(bus) == 4 and not failures


async def test_partitions_kept_through_a_rebalance_are_committed_when_others_moved_away() -> None:
    """A commit naming a partition that moved away is refused whole; the loop must still
    commit the partitions it kept, or their lag stays stuck until new records arrive."""
    bus = InMemoryBus(NAMES)
    ticks = Ticks()
    handled: list[int] = []

    async def handler(deliveries: Sequence[Delivery]) -> None:
        handled.extend(range(len(deliveries)))

    loop = make_loop(bus, handler, commit_interval_s=1.0, monotonic=ticks)
    await loop.start()
    await bus.publish([numbered_event(f"c{i}", i) for i in range(40)])
    for _ in range(2000):
        if len(handled) == 40:
            break
        await asyncio.sleep(0.001)
    assert len(handled) == 40 and committed(bus) == 0
    bus.members[NAMES.group("g")].append("another-member")  # takes about half the partitions
    assert loop._consumer is not None
    kept = loop._consumer.assignment()
    ticks.now = 1.0
    for _ in range(2000):
        if any(group == NAMES.group("g") for group, _ in bus.committed):
            break
        await asyncio.sleep(0.001)
    await loop.stop()
    ends = {tp: len(records) for tp, records in bus.log.items() if tp.topic == NAMES.of(EVENTS)}
    mine = {tp: o for (group, tp), o in bus.committed.items() if group == NAMES.group("g")}
    assert kept and mine == {tp: ends[tp] for tp in kept if ends.get(tp)}
    assert loop.stats.rebalanced_commits == 0
