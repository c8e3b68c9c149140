"""An in-memory `Publisher` for tests and local runs: records, or refuses on demand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relance_events import Event, Publishable, as_event
from relance_runtime.bus.ports import OutgoingMessage
from relance_runtime.errors import BusUnavailable


class RecordingPublisher:
    """Keeps acknowledged events (as models); with `fail = True` it refuses like an
    unreachable broker."""

    def __init__(self, *, retry_after_s: float = 7) -> None:
        self.events: list[Event[Any]] = []
        self.raw: list[OutgoingMessage] = []
        self.fail = False
        self.retry_after_s = retry_after_s

    async def publish(self, events: Sequence[Publishable]) -> None:
        if self.fail:
            raise BusUnavailable("the bus refused", retry_after_s=self.retry_after_s)
        # Kept as models (ingest publishes wire forms), which tests read most easily.
        self.events.extend(as_event(e) for e in events)

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.fail:
            raise BusUnavailable("the bus refused", retry_after_s=self.retry_after_s)
        self.raw.extend(messages)
