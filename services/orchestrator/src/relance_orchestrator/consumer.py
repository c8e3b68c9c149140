"""The orchestrator's batch handler and timer loop on the runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from relance_events import Event, TraceContext
from relance_orchestrator.services import Orchestrator
from relance_runtime.clock import Clock
from relance_runtime.consumer import Delivery, is_transient
from relance_runtime.inbox import claim_new
from relance_runtime.telemetry import current_trace_context, event_span

SERVICE: Final = "orchestrator"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventHandler:
    """A whole batch in ONE transaction: inbox claim, every new event's effect, the
    produced `message.requested` events in the runtime outbox. `now` is read once.

    Events no plan can act on (`Engine.interest`: a custom event no plan names) are
    skipped before the inbox: they would change nothing, so there is nothing to dedupe.
    Most are skipped earlier still, by type, before decoding (see `bootstrap`)."""

    orchestrator: Orchestrator
    pool: asyncpg.Pool
    clock: Clock

    async def __call__(self, deliveries: Sequence[Delivery]) -> None:
        wants = self.orchestrator.engine.interest.wants
        deliveries = [d for d in deliveries if wants(d.event)]
        if not deliveries:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            new = await claim_new(conn, SERVICE, [d.event.event_id for d in deliveries])
            now = self.clock.now()
            events = []
            for delivery in deliveries:
                event = delivery.event
                if event.event_id in new:
                    new.discard(event.event_id)  # the same id twice in one batch: once
                    events.append(event)
            await self.orchestrator.handle_events(conn, events, now, traced=_handle_span)


@contextmanager
def _handle_span(event: Event[Any]) -> Iterator[TraceContext | None]:
    with event_span("orchestrator.handle", event):
        yield current_trace_context()


@dataclass(frozen=True)
class TimerLoop:
    """Fires due timers until stopped: batch after batch while there is work, else a
    short pause. Several processes may run it: SKIP LOCKED shares the timers."""

    orchestrator: Orchestrator
    pool: asyncpg.Pool
    clock: Clock
    batch: int = 500
    idle_s: float = 0.075
    max_backoff_s: float = 5.0

    async def run_once(self) -> int:
        async with self.pool.acquire() as conn:
            return await self.orchestrator.fire_due(conn, self.clock.now(), limit=self.batch)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                fired = await self.run_once()
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("timer loop failed; retrying")
                else:
                    log.warning("timer loop: database unavailable", extra={"error": repr(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.1
            if fired == 0:
                await asyncio.sleep(self.idle_s)
