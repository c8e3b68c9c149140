"""OpenTelemetry tracing and metrics, and structured JSON logs carrying trace ids.

W3C trace context travels in the event envelope and in Kafka headers, so one trace spans
ingest -> segmentation -> orchestrator -> sender. Metrics (e.g. the sender's
`relance.sender.*` counters) go wherever spans go.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from relance_events import Event, TraceContext

TRACER_NAME = "relance"

_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per finished span to a file (O_APPEND: processes may share it)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
                        "span_id": format(ctx.span_id, "016x") if ctx else None,
                        "parent_id": format(parent.span_id, "016x") if parent else None,
                        "service": span.resource.attributes.get("service.name"),
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "attributes": dict(span.attributes or {}),
                    },
                    default=str,
                )
            )
        with self._path.open("a") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class JsonLinesMetricExporter(MetricExporter):
    """Appends one JSON object per data point (cumulative sums) to a file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        lines = []
        for resource_metrics in metrics_data.resource_metrics:
            service = resource_metrics.resource.attributes.get("service.name")
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        record = {
                            "name": metric.name,
                            "service": service,
                            "attributes": dict(point.attributes or {}),
                            "value": value,
                            "time_ns": point.time_unix_nano,
                        }
                        lines.append(json.dumps(record, default=str))
        with self._path.open("a") as out:
            out.write("".join(line + "\n" for line in lines))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def metrics_file(span_file: Path) -> Path:
    """Where the `file` exporter writes metrics: beside the span file (spans.metrics.jsonl)."""
    return span_file.with_suffix(".metrics.jsonl")


def metrics_endpoint(traces_endpoint: str | None) -> str | None:
    """The OTLP/HTTP metrics URL beside a traces URL (`.../v1/traces`), else None."""
    if traces_endpoint and traces_endpoint.rstrip("/").endswith("/v1/traces"):
        return traces_endpoint.rstrip("/").removesuffix("/v1/traces") + "/v1/metrics"
    return None


def metric_reader(
    exporter: str,
    endpoint: str | None = None,
    *,
    file: Path | None = None,
    interval_s: float = 60.0,
) -> MetricReader | None:
    """A periodic reader for the exporter that also takes spans; None for `none`.

    OTLP: an endpoint ending in `/v1/traces` becomes `/v1/metrics`; otherwise the
    OTEL_EXPORTER_OTLP_* variables decide.
    """
    metric_exporter: MetricExporter
    if exporter == "console":
        metric_exporter = ConsoleMetricExporter(out=sys.stderr)
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        target = metrics_endpoint(endpoint)
        metric_exporter = OTLPMetricExporter(endpoint=target) if target else OTLPMetricExporter()
    elif exporter == "file":
        if file is None:
            raise ValueError("the file exporter needs RELANCE_OTEL_FILE")
        metric_exporter = JsonLinesMetricExporter(metrics_file(file))
    else:
        return None
    return PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval_s * 1000)


def configure_metrics(
    service_name: str,
    exporter: str,
    endpoint: str | None = None,
    *,
    file: Path | None = None,
    extra_reader: MetricReader | None = None,
) -> MeterProvider:
    """Install this process's meter provider (once, from the composition root)."""
    readers = [r for r in (metric_reader(exporter, endpoint, file=file), extra_reader) if r]
    provider = MeterProvider(
        metric_readers=readers, resource=Resource.create({"service.name": service_name})
    )
    metrics.set_meter_provider(provider)
    return provider


def configure_tracing(
    service_name: str,
    exporter: str,
    endpoint: str | None = None,
    *,
    file: Path | None = None,
    extra_processor: SpanProcessor | None = None,
) -> TracerProvider | None:
    """Install this process's tracer provider, and its meter provider with the same
    exporter (once, from the composition root).

    With `none` (and no extra processor) no SDK provider is installed: spans would be
    recorded for nobody, at about a fifth of a busy consumer's CPU. The API's tracer then
    hands each event's own context through (`event_span` makes the incoming trace
    current), so events produced downstream and log lines keep the caller's trace id."""
    configure_metrics(service_name, exporter, endpoint, file=file)
    if exporter == "none" and extra_processor is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter(out=sys.stderr)
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    if exporter == "file":
        if file is None:
            raise ValueError("the file exporter needs RELANCE_OTEL_FILE")
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(file)))
    elif span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    trace.set_tracer_provider(provider)
    return provider


def simple_processor(exporter: SpanExporter) -> SpanProcessor:
    return SimpleSpanProcessor(exporter)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_trace_context() -> TraceContext | None:
    """The active span's context, to stamp on events produced now."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    parent = carrier.get("traceparent")
    if parent is None:
        return None
    return TraceContext(traceparent=parent, tracestate=carrier.get("tracestate"))


def _event_parent(event: Event[Any]) -> otel_context.Context:
    carrier: dict[str, str] = {}
    if event.trace is not None:
        carrier["traceparent"] = event.trace.traceparent
        if event.trace.tracestate:
            carrier["tracestate"] = event.trace.tracestate
    return propagate.extract(carrier)


def _event_attributes(event: Event[Any], attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        "relance.event_id": str(event.event_id),
        "relance.event_type": event.type,
        "relance.shop_id": event.shop_id,
        **{k: v for k, v in attributes.items() if v is not None},
    }


@contextlib.contextmanager
def event_span(name: str, event: Event[Any], **attributes: Any) -> Iterator[trace.Span]:
    """A span for handling `event`, child of the span that produced it."""
    token = otel_context.attach(_event_parent(event))
    try:
        with tracer().start_as_current_span(
            name, attributes=_event_attributes(event, attributes)
        ) as span:
            yield span
    finally:
        otel_context.detach(token)


def start_event_span(name: str, event: Event[Any], **attributes: Any) -> trace.Span:
    """`event_span` for work done on many events together: started, not made current;
    the caller ends it (`span.end()`) when this event's part is done."""
    return tracer().start_span(
        name, context=_event_parent(event), attributes=_event_attributes(event, attributes)
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the active trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            line["trace_id"] = format(span_context.trace_id, "032x")
            line["span_id"] = format(span_context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS and key != "color_message":
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO", fmt: str = "json", service: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "uvicorn.access", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if service:
        old_factory = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = old_factory(*args, **kwargs)
            record.service = service
            return record

        logging.setLogRecordFactory(factory)
