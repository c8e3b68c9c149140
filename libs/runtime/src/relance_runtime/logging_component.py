"""A component that consumes its service's subscriptions and logs each event.

This is what a service runs before its own handlers are wired: it proves the process
starts, joins its consumer groups, commits, and leaves cleanly.
"""

from __future__ import annotations

import logging

from relance_events import Event, Payload
from relance_runtime.consumer import per_event
from relance_runtime.platform import Platform
from relance_runtime.registry import ServiceName
from relance_runtime.service import Component

log = logging.getLogger(__name__)


def logging_component(name: ServiceName, platform: Platform) -> Component:
    async def log_event(event: Event[Payload]) -> None:
        log.info(
            "event consumed",
            extra={"service": name, "type": event.type, "event_id": str(event.event_id)},
        )

    return Component(
        name, consumers=platform.consumers_for(name, per_event(log_event, f"{name}.consume"))
    )
