"""The scheduled recompute over the in-memory store, with time passed in: which shops are
due when, and what reaches the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from relance_events.event import Event, new_event
from relance_events.payloads import (
    ContactIdentified,
    LifecycleStageChanged,
    OrderCompleted,
    Payload,
)
from relance_runtime.clock import FixedClock
from relance_runtime.db import Connection
from relance_segmentation.adapters.memory import (
    MEMORY_CONNECTION,
    MemoryPool,
    MemorySegmentationStore,
)
from relance_segmentation.domain.lifecycle import LifecycleConfig
from relance_segmentation.services import SegmentationService

T0 = datetime(2024, 7, 1, 6, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class Staged:
    """An outbox that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Event[Any]] = []

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None:
        self.events.extend(events)

    def take(self) -> list[Event[Any]]:
        taken, self.events = self.events, []
        return taken


def event(payload: Payload, key: str, shop: str = "s1", at: datetime = T0) -> Event[Payload]:
    return new_event(payload, shop_id=shop, contact_key=key, source="test", occurred_at=at)


async def setup() -> tuple[MemorySegmentationStore, Staged, SegmentationService]:
    store = MemorySegmentationStore(LifecycleConfig())
    outbox = Staged()
    service = SegmentationService(
        store, MemoryPool(), outbox, FixedClock(T0), recompute_interval=DAY
    )
    # bought 6 months before T0 plus 6 hours: lapsing from T0 + 6 hours on
    bought = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    for key, order_id in (("ada", "o1"), ("ada", "o2"), ("bob", "o3")):
        paid = OrderCompleted(order_id=order_id, total=Decimal(40))
        await store.apply_event(MEMORY_CONNECTION, event(paid, key, at=bought), T0)
    await store.apply_event(MEMORY_CONNECTION, event(ContactIdentified(), "cy", shop="s2"), T0)
    return store, outbox, service


async def test_a_shop_without_boundaries_is_recomputed_at_once_then_once_per_interval() -> None:
    _, outbox, service = await setup()

    first = await service.recompute_due(T0)
    assert [(r.shop_id, r.as_of, r.result.customers) for r in first] == [
        ("s1", T0, 2),
        ("s2", T0, 0),
    ]
    # ada and bob get their first RFM segments; cy's first profile came with its identify
    assert [type(e.payload).__name__ for e in outbox.take()] == ["RfmSegmentChanged"] * 2

    assert await service.recompute_due(T0 + DAY - timedelta(microseconds=1)) == []
    again = await service.recompute_due(T0 + DAY)
    assert [r.shop_id for r in again] == ["s1", "s2"]
    stages = [e.payload for e in outbox.take() if isinstance(e.payload, LifecycleStageChanged)]
    assert sorted((p.user_id, p.previous, p.current) for p in stages) == [
        ("ada", "loyal", "lapsing"),
        ("bob", "new_customer", "lapsing"),
    ]


async def test_a_forced_recompute_runs_when_not_due_and_repeats_no_change() -> None:
    store, outbox, service = await setup()
    await service.recompute_due(T0)
    first = outbox.take()

    result = await service.recompute_shop("s1", T0, force=True)
    assert result is not None
    assert (result.profiles_written, result.changes_recorded) == (0, 0)
    assert outbox.take() == []
    assert await service.recompute_shop("s1", T0 + timedelta(hours=1)) is None  # not due

    # the same recompute rebuilt from scratch stages the very same event ids
    _, fresh_outbox, fresh = await setup()
    await fresh.recompute_due(T0)
    assert [e.event_id for e in fresh_outbox.take()] == [e.event_id for e in first]
    view = await store.contact(MEMORY_CONNECTION, "s1", "ada")
    assert view is not None and view.profile is not None
    assert (view.profile.stage, view.profile.segment) == ("loyal", "at_risk")
