"""Helpers shared by the bus tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from relance_events import Event, decode, new_event
from relance_events.payloads import CustomTracked
from relance_runtime.bus.ports import BusConsumer, Record


def numbered_event(contact: str, seq: int) -> Event[CustomTracked]:
    return new_event(
        CustomTracked(name="numbered", properties={"seq": seq}),
        shop_id="shop",
        contact_key=contact,
        source="test",
        occurred_at=datetime.now(UTC),
    )


def seq_of(record: Record) -> tuple[str, int]:
    event = decode(record.value)
    assert isinstance(event.payload, CustomTracked)
    seq = event.payload.properties["seq"]
    assert isinstance(seq, int)
    return event.contact_key, seq


async def poll_until(
    consumer: BusConsumer, count: int, *, timeout_s: float = 30.0, commit: bool = True
) -> list[Record]:
    """Poll (and commit) until `count` records arrived or the timeout passed."""
    got: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(got) < count and loop.time() < deadline:
        batch = await consumer.poll(max_records=500, timeout_s=0.5)
        got.extend(batch)
        if batch and commit:
            offsets: dict = {}
            for r in batch:
                offsets[r.tp] = max(offsets.get(r.tp, 0), r.offset + 1)
            await consumer.commit(offsets)
    return got
