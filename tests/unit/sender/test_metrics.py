"""The sender's counters, exported as OpenTelemetry metrics (`relance.sender.*`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from relance_runtime.errors import BusUnavailable
from relance_runtime.telemetry import metric_reader, metrics_endpoint, metrics_file
from relance_sender.adapters.otel_metrics import SENDER_METER, OtelSenderMetrics
from relance_sender.domain.outcome import Ambiguous, Deferred, DeliveryOutcome, Rejected
from relance_sender.domain.policy import ConsentRecord
from relance_sender.domain.request import SendRequest
from relance_sender.email_message import EmailBuilder
from relance_sender.rendering.renderer import Renderer

from .conftest import NOW, full_context, make_request
from .test_send_message import World, _crash_after_claim

PointKey = tuple[str, frozenset[tuple[str, str]]]


class Exported:
    """A meter provider read in memory, and the sender's metrics on it."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.metrics = OtelSenderMetrics(self.provider.get_meter(SENDER_METER))

    def points(self) -> dict[PointKey, int]:
        """Cumulative value of every data point, by metric name and attributes."""
        data = self.reader.get_metrics_data()
        points: dict[PointKey, int] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        attributes = frozenset((point.attributes or {}).items())
                        points[metric.name, attributes] = int(point.value)  # type: ignore[union-attr]
        return points

    def world(self, builder: EmailBuilder, renderer: Renderer, *outcomes: DeliveryOutcome) -> World:
        world = World(builder, renderer, *outcomes)
        world.metrics = self.metrics  # type: ignore[assignment]
        world.send = world.sender("worker-a")
        return world


def to(address: str, contact_key: str, message_id: str) -> SendRequest:
    context = full_context()
    context["contact"]["email"] = address
    return make_request(
        "birthday", "wishes", message_id=message_id, contact_key=contact_key, context=context
    )


def point(name: str, **attributes: str) -> PointKey:
    return f"relance.sender.{name}", frozenset(attributes.items())


@pytest.fixture
def exported() -> Iterator[Exported]:
    exported = Exported()
    try:
        yield exported
    finally:
        exported.provider.shutdown()


async def test_a_marketing_send_a_crash_left_sending_counts_as_ambiguous(
    exported: Exported, builder: EmailBuilder, renderer: Renderer
) -> None:
    world = exported.world(builder, renderer)
    await _crash_after_claim(world, "marketing")
    assert point("ambiguous", channel="email", during="recovery") not in exported.points()

    restarted = world.sender("worker-a")  # the process after the crash, same instance name
    assert (await restarted.recover_interrupted()).ambiguous == 1
    assert exported.points()[point("ambiguous", channel="email", during="recovery")] == 1
    # Recovering again finds nothing: the counter does not move.
    await restarted.recover_interrupted()
    assert exported.points()[point("ambiguous", channel="email", during="recovery")] == 1


async def test_transactional_mail_a_crash_interrupted_counts_as_recovered_for_resend(
    exported: Exported, builder: EmailBuilder, renderer: Renderer
) -> None:
    world = exported.world(builder, renderer)
    await _crash_after_claim(world, "transactional")
    await world.sender("worker-a").recover_interrupted()
    points = exported.points()
    assert points[point("recovered_for_resend", channel="email")] == 1
    assert point("ambiguous", channel="email", during="recovery") not in points


async def test_every_outcome_has_its_counter(
    exported: Exported, builder: EmailBuilder, renderer: Renderer
) -> None:
    world = exported.world(
        builder,
        renderer,
        Rejected("550 5.1.1 no such user", "550 5.1.1", bounce="hard", suppress=True),
        Deferred("451 4.3.0 try later", "451 4.3.0"),
        Ambiguous("connection reset after DATA"),
    )
    send = world.send.handle
    await send(to("zoe@example.org", "u-1", "m-hard"))
    # The address is now suppressed: the next message to it is stopped before any send.
    await send(to("zoe@example.org", "u-1", "m-stopped"))
    await send(to("leo@example.org", "u-2", "m-later"))
    await send(to("ines@example.org", "u-3", "m-unknown"))
    await send(to("ada@example.org", "u-4", "m-ok"))
    await send(to("ada@example.org", "u-4", "m-ok"))  # a redelivery
    blank = {"contact": {"email": "max@example.org"}}  # no coupon: the template cannot render
    await send(make_request("birthday", "wishes", message_id="m-blank", context=blank))
    async with world.store.transaction() as tx:
        await tx.record_consent(ConsentRecord("shop-1", "u-5", "email", "marketing", "denied", NOW))
    await send(to("eve@example.org", "u-5", "m-objected"))

    points = exported.points()
    assert points[point("failed", channel="email", cause="refused")] == 1
    assert points[point("bounced", channel="email", kind="hard")] == 1
    assert points[point("suppressed", channel="email", reason="hard_bounce")] == 1
    assert points[point("deferred", channel="email")] == 1
    assert points[point("ambiguous", channel="email", during="delivery")] == 1
    assert points[point("sent", channel="email")] == 1
    assert points[point("duplicate", channel="email")] == 1
    assert points[point("failed", channel="email", cause="render")] == 1
    assert points[point("suppressed", channel="email", reason="consent")] == 1


async def test_retries_that_run_out_count_as_failed_once(
    exported: Exported, builder: EmailBuilder, renderer: Renderer
) -> None:
    world = exported.world(builder, renderer, *[Deferred("451 later", "451")] * 20)
    await world.send.handle(make_request("birthday", "wishes"))
    for _ in range(20):
        world.clock.advance(timedelta(hours=5))
        await world.send.run_due()
    points = exported.points()
    assert points[point("failed", channel="email", cause="gave_up")] == 1
    assert points[point("deferred", channel="email")] >= 2


async def test_a_send_whose_status_event_could_not_be_published_counts_once(
    exported: Exported, builder: EmailBuilder, renderer: Renderer
) -> None:
    world = exported.world(builder, renderer)
    world.bus.down = True
    with pytest.raises(BusUnavailable):
        await world.send.handle(make_request("birthday", "wishes"))
    world.bus.down = False
    await world.send.handle(make_request("birthday", "wishes"))
    points = exported.points()
    assert points[point("sent", channel="email")] == 1
    assert points[point("duplicate", channel="email")] == 1


def test_the_file_exporter_writes_metrics_beside_the_spans(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    reader = metric_reader("file", file=spans)
    assert reader is not None
    provider = MeterProvider(metric_readers=[reader])
    OtelSenderMetrics(provider.get_meter(SENDER_METER)).count(
        "ambiguous", "email", during="recovery"
    )
    provider.shutdown()  # flushes, as the process's exit does
    lines = [json.loads(line) for line in metrics_file(spans).read_text().splitlines()]
    assert {
        "name": "relance.sender.ambiguous",
        "attributes": {"channel": "email", "during": "recovery"},
        "value": 1,
    }.items() <= lines[-1].items()
    assert not spans.exists()  # spans keep their own file


def test_no_exporter_means_no_reader() -> None:
    assert metric_reader("none") is None


def test_otlp_metrics_go_beside_the_traces() -> None:
    assert metrics_endpoint("http://collector:4318/v1/traces") == "http://collector:4318/v1/metrics"
    assert (
        metrics_endpoint("http://collector:4318/v1/traces/") == "http://collector:4318/v1/metrics"
    )
    assert metrics_endpoint("http://collector:4318") is None  # OTEL_EXPORTER_OTLP_* decide
    assert metrics_endpoint(None) is None
