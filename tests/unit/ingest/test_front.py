"""`IngestFront`: the Segment routes answered ahead of FastAPI, and the request's trace."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer, use_span
from starlette.types import ASGIApp, Receive, Scope, Send

from relance_ingest.adapters.memory_carts import InMemoryCartStore
from relance_ingest.domain.rate_limit import RateLimiter
from relance_ingest.http.deps import IngestDeps
from relance_ingest.http.segment import IngestFront, segment_endpoints
from relance_ingest.services import IngestService, TrackingService, trace_of
from relance_ingest.settings import IngestSettings
from relance_ingest.testing import RecordingPublisher
from relance_ingest.tracing import UnrecordedTracer
from relance_runtime.auth import StaticKeyStore
from relance_runtime.clock import FixedClock
from relance_runtime.telemetry import current_trace_context
from relance_runtime.tokens import TokenSigner

from .conftest import NOW, TOKEN_KEYS, WRITE_KEY, basic

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ORDER = {
    "messageId": "m1",
    "userId": "u1",
    "event": "Order Completed",
    "properties": {"order_id": "o1", "total": 10},
    "timestamp": "2025-03-01T11:00:00Z",
}


def deps(
    publisher: RecordingPublisher,
    provider: TracerProvider | None = None,
    spans: Tracer | None = None,
) -> IngestDeps:
    spans = provider.get_tracer("test") if provider is not None else spans
    return IngestDeps(
        ingest=IngestService(publisher, InMemoryCartStore(), spans=spans),
        tracking=TrackingService(publisher, TokenSigner.from_setting(TOKEN_KEYS)),
        keys=StaticKeyStore.from_settings(f"shop1:{WRITE_KEY}", ""),
        limiter=RateLimiter(rate=100, burst=100),
        clock=FixedClock(NOW),
        settings=IngestSettings(),
    )


class Recorder:
    """The app behind the front: records what reaches it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(f"{scope.get('method', scope['type'])} {scope.get('path', '')}")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_the_front_answers_segment_posts_and_passes_everything_else() -> None:
    publisher = RecordingPublisher()
    endpoints = segment_endpoints(deps(publisher))
    inner = Recorder()
    async with client(IngestFront(inner, lambda: endpoints)) as http:
        accepted = await http.post("/v1/track", json=ORDER, headers=basic(WRITE_KEY))
        assert (accepted.status_code, accepted.json()) == (200, {"success": True})
        assert (await http.get("/v1/track")).status_code == 204
        assert (await http.post("/u/token", data={"a": "b"})).status_code == 204
        assert (await http.get("/openapi.json")).status_code == 204
    assert inner.paths == ["GET /v1/track", "POST /u/token", "GET /openapi.json"]
    assert len(publisher.events) == 1


async def test_routes_are_served_once_the_component_exists() -> None:
    """Before the app's lifespan built ingest, requests go to the app (as FastAPI would)."""
    publisher = RecordingPublisher()
    built: dict[str, Mapping[str, ASGIApp]] = {}
    inner = Recorder()
    async with client(IngestFront(inner, lambda: built.get("ingest", {}))) as http:
        assert (await http.post("/v1/track", json=ORDER)).status_code == 204
        built["ingest"] = segment_endpoints(deps(publisher))
        response = await http.post("/v1/track", json=ORDER, headers=basic(WRITE_KEY))
    assert response.status_code == 200
    assert inner.paths == ["POST /v1/track"]


async def test_a_callers_traceparent_continues_into_the_events() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    publisher = RecordingPublisher()
    endpoints = segment_endpoints(deps(publisher, provider))
    headers = {**basic(WRITE_KEY), "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    async with client(IngestFront(FastAPI(), lambda: endpoints)) as http:
        assert (await http.post("/v1/track", json=ORDER, headers=headers)).status_code == 200
        assert (await http.post("/v1/track", json=ORDER, headers=basic(WRITE_KEY))).is_success
    (span, fresh) = exporter.get_finished_spans()
    assert span.name == "ingest.accept"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    continued, started = publisher.events
    assert continued.trace is not None and continued.trace.traceparent.split("-")[1] == TRACE_ID
    # Without one, the request starts its own trace (the span is a root).
    assert fresh.parent is None
    assert started.trace is not None
    assert started.trace.traceparent.split("-")[1] == format(fresh.context.trace_id, "032x")


async def test_without_an_exporter_requests_keep_their_trace_ids_unrecorded() -> None:
    publisher = RecordingPublisher()
    endpoints = segment_endpoints(deps(publisher, spans=UnrecordedTracer()))
    caller = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    async with client(IngestFront(FastAPI(), lambda: endpoints)) as http:
        for headers in ({"traceparent": caller}, {}, {}):
            response = await http.post(
                "/v1/track", json=ORDER, headers={**basic(WRITE_KEY), **headers}
            )
            assert response.status_code == 200
    parents = [e.trace.traceparent.split("-") for e in publisher.events if e.trace]
    assert len(parents) == 3
    (_, continued, span_id, flags), first, second = parents
    assert (continued, flags) == (TRACE_ID, "01")
    assert span_id != "00f067aa0ba902b7"  # ingest's own span, child of the caller's
    assert first[1] != second[1] and first[3] == second[3] == "01"  # roots, sampled


def test_trace_of_a_span_is_what_the_propagator_gives_inside_it() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("outer") as span:
        expected = current_trace_context()
    assert trace_of(span) == expected
    with use_span(span):
        assert trace_of(span) == current_trace_context()


def test_trace_of_an_invalid_span_is_none() -> None:
    from opentelemetry.trace import INVALID_SPAN

    assert trace_of(INVALID_SPAN) is None


async def test_a_client_gone_mid_body_gets_no_answer() -> None:
    (endpoint,) = [
        e for p, e in segment_endpoints(deps(RecordingPublisher())).items() if p == "/v1/track"
    ]
    sent: list[Any] = []
    messages = iter(
        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
    )

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/track",
        "headers": [(b"authorization", b"Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()))],
    }
    await endpoint(scope, receive, send)
    assert sent == []
