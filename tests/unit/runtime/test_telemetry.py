from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from opentelemetry.sdk.trace import TracerProvider

from relance_events import new_event
from relance_events.payloads import EmailOpened
from relance_runtime.telemetry import JsonFormatter, current_trace_context, event_span


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("relance.test", logging.INFO, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_log_lines_are_json_with_structured_fields() -> None:
    line = json.loads(JsonFormatter().format(record("consumer started", group="sender", n=3)))
    assert line["msg"] == "consumer started"
    assert line["level"] == "info"
    assert line["group"] == "sender"
    assert line["n"] == 3
    assert "trace_id" not in line


def test_spans_of_a_handled_event_continue_its_trace_and_show_in_logs() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("ingest") as producer:
        trace = current_trace_context()
    assert trace is not None
    event = new_event(
        EmailOpened(message_id="m"),
        shop_id="s",
        contact_key="c",
        source="t",
        occurred_at=datetime.now(UTC),
        trace=trace,
    )
    formatter = JsonFormatter()
    with event_span("sender.handle", event) as span:
        line = json.loads(formatter.format(record("sending")))
    expected = format(producer.get_span_context().trace_id, "032x")
    # Recording or not (no provider installed), the handling span continues the trace.
    assert format(span.get_span_context().trace_id, "032x") == expected
    assert line["trace_id"] == expected
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")


def test_the_file_exporter_appends_one_json_line_per_span(tmp_path: object) -> None:
    from pathlib import Path

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from relance_runtime.telemetry import JsonLinesSpanExporter

    path = Path(str(tmp_path)) / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
        pass
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["name"] for s in spans] == ["inner", "outer"]
    assert spans[0]["parent_id"] == spans[1]["span_id"]
    assert {s["trace_id"] for s in spans} == {format(outer.get_span_context().trace_id, "032x")}


def test_without_an_exporter_nothing_records_and_the_callers_trace_goes_on() -> None:
    """`none` installs no SDK provider (in a fresh interpreter: the global provider can
    be set once per process): handling spans record nothing, and what a handler produces
    carries the trace of the event it handled."""
    import subprocess
    import sys

    script = """
from datetime import UTC, datetime
from opentelemetry import trace
from relance_events import new_event, TraceContext
from relance_events.payloads import EmailOpened
from relance_runtime.telemetry import configure_tracing, current_trace_context, event_span

assert configure_tracing("relance-test", "none") is None
parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
event = new_event(EmailOpened(message_id="m"), shop_id="s", contact_key="c", source="t",
                  occurred_at=datetime.now(UTC), trace=TraceContext(traceparent=parent))
with event_span("consumer.handle", event) as span:
    assert not span.is_recording()
    produced = current_trace_context()
assert produced is not None and produced.traceparent == parent, produced
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
