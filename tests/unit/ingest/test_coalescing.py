"""Group commit in front of the bus: shared publishes, per-caller outcome, order kept."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from relance_events import Event, new_event
from relance_events.payloads import CustomTracked
from relance_ingest.adapters.coalescing import CoalescingPublisher
from relance_runtime.bus.ports import OutgoingMessage
from relance_runtime.errors import BusUnavailable

NOW = datetime(2025, 3, 1, tzinfo=UTC)


def events(tag: str, n: int) -> list[Event[Any]]:
    return [
        new_event(
            CustomTracked(name=f"{tag}{i}", properties={}),
            shop_id="s",
            contact_key=tag,
            source="t",
            occurred_at=NOW,
        )
        for i in range(n)
    ]


class SlowBus:
    """Acknowledges after `gate` opens; refuses calls containing a `poison` event."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()

    async def publish(self, batch: Sequence[Event[Any]]) -> None:
        self.calls.append([e.payload.name for e in batch])
        await self.gate.wait()
        if any(e.payload.name.startswith("poison") for e in batch):
            raise BusUnavailable("refused", retry_after_s=3)

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        raise AssertionError("not used")


async def test_waiting_requests_leave_together_in_order() -> None:
    bus = SlowBus()
    publisher = CoalescingPublisher(bus, max_in_flight=1)
    first = asyncio.create_task(publisher.publish(events("a", 1)))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(publisher.publish(events(t, 2))) for t in "bcd"]
    await asyncio.sleep(0)
    assert bus.calls == [["a0"]]  # the others wait for the one in flight
    bus.gate.set()
    await asyncio.gather(first, *waiting)
    assert bus.calls == [["a0"], ["b0", "b1", "c0", "c1", "d0", "d1"]]


async def test_a_refused_group_fails_every_caller_in_it_and_only_them() -> None:
    bus = SlowBus()
    publisher = CoalescingPublisher(bus, max_in_flight=1, max_events=2)
    first = asyncio.create_task(publisher.publish(events("a", 1)))
    await asyncio.sleep(0)
    grouped = [
        asyncio.create_task(publisher.publish(events("poison", 1))),
        asyncio.create_task(publisher.publish(events("b", 1))),
    ]
    later = asyncio.create_task(publisher.publish(events("c", 2)))  # over max_events: alone
    await asyncio.sleep(0)
    bus.gate.set()
    await first
    results = await asyncio.gather(*grouped, later, return_exceptions=True)
    assert [type(r) for r in results] == [BusUnavailable, BusUnavailable, type(None)]
    assert isinstance(results[0], BusUnavailable) and results[0].retry_after_s == 3
    assert bus.calls == [["a0"], ["poison0", "b0"], ["c0", "c1"]]


async def test_a_quiet_publisher_publishes_at_once() -> None:
    bus = SlowBus()
    bus.gate.set()
    publisher = CoalescingPublisher(bus, max_in_flight=2)
    await publisher.publish(events("a", 3))
    await publisher.publish([])
    assert bus.calls == [["a0", "a1", "a2"]]


async def test_a_cancelled_flush_does_not_leave_callers_hanging() -> None:
    bus = SlowBus()
    publisher = CoalescingPublisher(bus, max_in_flight=1)
    first = asyncio.create_task(publisher.publish(events("a", 1)))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(publisher.publish(events("b", 1)))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    flushes = list(publisher._tasks)
    for task in flushes:
        task.cancel()
    with pytest.raises(BusUnavailable):
        await asyncio.wait_for(waiting, timeout=2)
