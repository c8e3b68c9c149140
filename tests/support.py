"""Helpers shared by test modules (import with a relative import, e.g. `from ...support`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from relance_events import Event, Payload, decode
from relance_events.topics import Topic
from relance_runtime.platform import Platform

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout_s: float = 15.0, every_s: float = 0.02
) -> T:
    """Poll until `probe` returns something truthy, and return it; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(every_s)


async def topic_events(platform: Platform, topic: Topic) -> list[Event[Payload]]:
    """Everything on `topic` so far, read by a fresh consumer group until two empty polls."""
    consumer = platform.bus.consumer(f"probe-{uuid.uuid4().hex[:8]}", [platform.names.of(topic)])
    await consumer.start()
    try:
        out: list[Event[Payload]] = []
        empty = 0
        while empty < 2:
            records = await consumer.poll(max_records=1000, timeout_s=0.2)
            empty = 0 if records else empty + 1
            out.extend(decode(r.value) for r in records)
        return out
    finally:
        await consumer.stop()


__all__ = ["eventually", "topic_events"]
