"""Kafka round trips: a trace crosses two consumers; the outbox relays a handler's events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from relance_events import new_event
from relance_events.payloads import EmailOpened, OrderCompleted
from relance_events.topics import DEAD_LETTERS, EVENTS
from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.messages import to_message
from relance_runtime.consumer import ConsumerLoop, Delivery, per_event
from relance_runtime.inbox import claim_new
from relance_runtime.outbox import OutboxRelay, TableOutbox
from relance_runtime.telemetry import current_trace_context, event_span, tracer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


async def _wait(predicate: object, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.05)


async def test_one_trace_spans_producer_and_two_consumers_through_the_outbox(
    kafka_bus: KafkaBus, pool: asyncpg.Pool, spans: InMemorySpanExporter
) -> None:
    names = kafka_bus.names
    outbox = TableOutbox(lambda event: to_message(event, names))
    relay = OutboxRelay(pool, kafka_bus)
    await relay.start()
    now = datetime.now(UTC)

    # First hop: "ingest" publishes an order inside a request span.
    with tracer().start_as_current_span("ingest.request") as root:
        order = new_event(
            OrderCompleted(order_id="o-1", total="42.00"),  # type: ignore[arg-type]
            shop_id="shop",
            contact_key="u-1",
            source="ingest",
            occurred_at=now,
            trace=current_trace_context(),
        )
        await kafka_bus.publish([order])
    trace_id = root.get_span_context().trace_id

    # Second hop: a consumer turns it into a follow-up event through the outbox,
    # in the same transaction as its inbox claim.
    async def first_handler(deliveries: Sequence[Delivery]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            new = await claim_new(conn, "first", [d.event.event_id for d in deliveries])
            for d in deliveries:
                if d.event.event_id not in new or not isinstance(d.event.payload, OrderCompleted):
                    continue
                with event_span("first.handle", d.event):
                    follow_up = new_event(
                        EmailOpened(message_id="m-1"),
                        shop_id=d.event.shop_id,
                        contact_key=d.event.contact_key,
                        source="first",
                        occurred_at=now,
                        trace=current_trace_context(),
                    )
                    await outbox.add(conn, [follow_up])

    seen_by_second: list[uuid.UUID] = []

    async def second_handler(event: object) -> None:
        seen_by_second.append(event.event_id)  # type: ignore[attr-defined]

    loops = [
        ConsumerLoop(
            kafka_bus,
            group=names.group("first"),
            topics=[names.of(EVENTS)],
            handler=first_handler,
            dead_letter_topic=names.of(DEAD_LETTERS),
            poll_timeout_s=0.2,
        ),
        ConsumerLoop(
            kafka_bus,
            group=names.group("second"),
            topics=[names.of(EVENTS)],
            handler=per_event(second_handler, "second.handle"),  # type: ignore[arg-type]
            dead_letter_topic=names.of(DEAD_LETTERS),
            poll_timeout_s=0.2,
        ),
    ]
    for loop in loops:
        await loop.start()
    await _wait(lambda: len(seen_by_second) >= 2)
    for loop in loops:
        await loop.stop()
    await relay.stop()

    assert order.event_id in seen_by_second
    assert len(seen_by_second) == 2
    finished = {s.name: s for s in spans.get_finished_spans()}
    for name in ("ingest.request", "first.handle", "second.handle"):
        assert name in finished, name
    same_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    assert {s.name for s in same_trace} >= {"ingest.request", "first.handle", "second.handle"}
    second_spans = [s for s in same_trace if s.name == "second.handle"]
    assert len(second_spans) == 2, "both the order and its follow-up carry the same trace"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM runtime_outbox") == 0
