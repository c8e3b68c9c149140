"""Group commit in `IngestService`: requests waiting while a group is in flight share one
read of open carts and one acknowledged publish; each still gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from relance_events import Event, Publishable, as_event
from relance_events.payloads import CartChanged, OrderCompleted
from relance_events.segment_spec import Cart
from relance_ingest.adapters.memory_carts import InMemoryCartStore
from relance_ingest.ports import CartProbe
from relance_ingest.services import IngestService
from relance_runtime.bus.ports import OutgoingMessage
from relance_runtime.errors import BusUnavailable

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


class GatedBus:
    """Acknowledges a publish once `gate` opens; refuses publishes with a `poison` event."""

    def __init__(self) -> None:
        self.calls: list[list[Event[Any]]] = []
        self.gate = asyncio.Event()

    async def publish(self, events: Sequence[Publishable]) -> None:
        events = [as_event(e) for e in events]
        self.calls.append(events)
        await self.gate.wait()
        if any(getattr(e.payload, "name", "") == "poison" for e in events):
            raise BusUnavailable("refused", retry_after_s=3)

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        raise AssertionError("not used")


class CountingCarts(InMemoryCartStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[CartProbe]] = []

    async def open_carts(self, probes: Sequence[CartProbe]) -> list[bool]:
        self.reads.append(list(probes))
        return await super().open_carts(probes)


def custom(
    message_id: str, name: str = "Signed Up", user: str = "u1"
) -> tuple[None, dict[str, Any]]:
    return (None, {"type": "track", "messageId": message_id, "userId": user, "event": name})


def order(message_id: str, user: str) -> tuple[None, dict[str, Any]]:
    props = {"order_id": f"o-{message_id}", "total": 10}
    return (
        None,
        {
            "type": "track",
            "messageId": message_id,
            "userId": user,
            "event": "Order Completed",
            "properties": props,
        },
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_waiting_for_a_group_leave_together_in_order() -> None:
    bus, carts = GatedBus(), CountingCarts()
    service = IngestService(bus, carts)
    first = asyncio.create_task(service.accept("s", [order("a", "u1")], NOW))
    await settle()
    waiting = [
        asyncio.create_task(service.accept("s", [order("b", "u2"), custom("c")], NOW)),
        asyncio.create_task(service.accept("s", [custom("d", user="u3")], NOW)),
        asyncio.create_task(service.accept("t", [order("e", "u4")], NOW)),
    ]
    await settle()
    assert len(bus.calls) == 1  # the others wait for the group in flight
    bus.gate.set()
    assert await first == 1
    assert [await w for w in waiting] == [2, 1, 1]
    assert len(bus.calls) == 2
    second = bus.calls[1]
    assert [e.contact_key for e in second] == ["u2", "u1", "u3", "u4"]
    assert [e.shop_id for e in second] == ["s", "s", "s", "t"]
    # One read of open carts per group, for its orders only.
    assert [[(p.shop_id, set(p.contact_keys)) for p in read] for read in carts.reads] == [
        [("s", {"u1"})],
        [("s", {"u2"}), ("t", {"u4"})],
    ]


async def test_a_refused_group_fails_each_of_its_requests_and_only_them() -> None:
    bus = GatedBus()
    service = IngestService(bus, CountingCarts())
    first = asyncio.create_task(service.accept("s", [custom("a")], NOW))
    await settle()
    refused = [
        asyncio.create_task(service.accept("s", [custom("b", name="poison")], NOW)),
        asyncio.create_task(service.accept("s", [custom("c")], NOW)),
    ]
    await settle()
    bus.gate.set()
    assert await first == 1
    for task in refused:
        with pytest.raises(BusUnavailable) as caught:
            await task
        assert caught.value.retry_after_s == 3
    assert await service.accept("s", [custom("d")], NOW) == 1


async def test_an_order_with_an_open_cart_takes_the_transactional_path() -> None:
    bus = GatedBus()
    bus.gate.set()
    carts = CountingCarts()
    carts.carts["s"] = {"c1": Cart("c1", "u1", (), "EUR", is_open=True)}
    service = IngestService(bus, carts)
    counts = await asyncio.gather(
        service.accept("s", [order("a", "u1")], NOW),
        service.accept("s", [order("b", "u2")], NOW),
    )
    assert counts == [1, 1]
    published = [e for call in bus.calls for e in call]
    closing = next(e for e in published if e.contact_key == "u1")
    assert isinstance(closing.payload, OrderCompleted)
    assert closing.payload.cart_id == "c1"
    assert carts.carts["s"]["c1"].is_open is False
    other = next(e for e in published if e.contact_key == "u2")
    assert isinstance(other.payload, OrderCompleted) and other.payload.cart_id is None


async def test_cart_changes_never_wait_in_a_group() -> None:
    bus = GatedBus()
    bus.gate.set()
    carts = CountingCarts()
    service = IngestService(bus, carts)
    add = (
        None,
        {
            "type": "track",
            "messageId": "p",
            "userId": "u1",
            "event": "Product Added",
            "properties": {"product_id": "x"},
        },
    )
    assert await service.accept("s", [add], NOW) == 1
    (call,) = bus.calls
    assert isinstance(call[0].payload, CartChanged)
    assert carts.reads == []


async def test_a_request_that_goes_away_does_not_stop_its_group() -> None:
    bus = GatedBus()
    service = IngestService(bus, CountingCarts())
    first = asyncio.create_task(service.accept("s", [custom("a")], NOW))
    await settle()
    leaving = asyncio.create_task(service.accept("s", [custom("b")], NOW))
    staying = asyncio.create_task(service.accept("s", [custom("c")], NOW))
    await settle()
    leaving.cancel()
    bus.gate.set()
    assert await first == 1
    assert await staying == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_groups_start_an_interval_apart_unless_full() -> None:
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    class Timed(GatedBus):
        async def publish(self, events: Sequence[Publishable]) -> None:
            starts.append(loop.time())
            await super().publish(events)

    timed = Timed()
    timed.gate.set()
    service = IngestService(timed, CountingCarts(), group_interval_s=0.2, full_group_events=3)
    assert await service.accept("s", [custom("a")], NOW) == 1  # quiet: at once
    assert await service.accept("s", [custom("b")], NOW) == 1  # waits for the interval
    assert starts[1] - starts[0] >= 0.19
    # Enough events waiting: no pause.
    many = [custom(f"c{i}") for i in range(3)]
    assert await service.accept("s", many, NOW) == 3
    assert starts[2] - starts[1] < 0.1
