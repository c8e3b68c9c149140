"""The backtest over Segment JSONL: survey answers, opens of earlier sends, the progress bar."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from relance_events.segment_spec import segment_to_events
from relance_orchestrator.cli import simulate
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.simulate import (
    SegmentValidationError,
    Simulation,
    read_segment_jsonl,
    simulate_segment_file,
)

UNTIL = datetime(2011, 6, 1, tzinfo=UTC)
Line = dict[str, Any]


def _identify() -> Line:
    return {
        "type": "identify",
        "messageId": "id-1",
        "userId": "u1",
        # a month before: the welcome pack's sends are out of the frequency cap's way
        "timestamp": "2010-12-01T10:00:00Z",
        "traits": {"email": "a@example.com", "email_consent": "granted"},
    }


def _track(segment_id: str, event: str, at: str, **properties: Any) -> Line:
    return {
        "type": "track",
        "messageId": segment_id,
        "userId": "u1",
        "event": event,
        "timestamp": at,
        "properties": properties,
    }


def _write(path: Path, lines: list[Line]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    return path


def _run(tmp_path: Path, lines: list[Line]) -> tuple[list[dict[str, Any]], Simulation]:
    out = io.BytesIO()
    sim = simulate_segment_file(
        _write(tmp_path / "events.jsonl", lines),
        UNTIL,
        out,
        engine=Engine(load_plans()),
        shop=ShopFacts(shop_id="shop", average_basket=Decimal(50)),
    )
    return [orjson.loads(line) for line in out.getvalue().splitlines()], sim


def _sends(tmp_path: Path, lines: list[Line]) -> list[dict[str, Any]]:
    return _run(tmp_path, lines)[0]


def _of(sends: list[dict[str, Any]], plan: str) -> list[tuple[str, str]]:
    return [(s["step"], s["at"]) for s in sends if s["plan"] == plan]


def _order() -> list[Line]:
    return [
        _identify(),
        _track("o-1", "Order Completed", "2011-01-03T10:05:00Z", order_id="o1", total=80),
    ]


@pytest.mark.parametrize(
    ("answer", "follow_up"),
    [
        ("not_satisfied", ("reassurance", "2011-01-11T09:00:00Z")),
        ("satisfied", ("thank_you", "2011-01-12T09:00:00Z")),
        ("very_satisfied", ("thank_you", "2011-01-12T09:00:00Z")),
    ],
)
def test_a_survey_answer_sends_its_follow_up(
    tmp_path: Path, answer: str, follow_up: tuple[str, str]
) -> None:
    answered = _track(
        "s-1", "Survey Answered", "2011-01-11T09:00:00Z", answer=answer, order_id="o1"
    )
    sends = _sends(tmp_path, [*_order(), answered])
    assert _of(sends, "satisfaction_survey") == [("survey", "2011-01-10T10:05:00Z"), follow_up]


def test_a_survey_answer_becomes_survey_answered_in_the_backtest_only() -> None:
    line = _track("s-1", "Survey Answered", "2011-01-11T09:00:00Z", answer="satisfied", order_id=7)
    (event,) = read_segment_jsonl([orjson.dumps(line)], shop_id="shop")
    assert event.type == "survey.answered"
    assert (event.payload.order_id, event.payload.answer, event.payload.origin) == (
        "7",
        "satisfied",
        "api",
    )
    assert event.payload.answer_id == str(event.event_id)
    # live ingest leaves it a custom event: answers reach production through feedback
    (live,) = segment_to_events(
        line, shop_id="shop", received_at=event.occurred_at, max_age=None, max_ahead=None
    )
    assert live.type == "custom.tracked"


@pytest.mark.parametrize(
    ("properties", "fields"),
    [
        ({"order_id": "o1"}, ["properties.answer"]),
        ({"order_id": "o1", "answer": "meh"}, ["properties.answer"]),
        ({"answer": "satisfied"}, ["properties.order_id"]),
        ({"answer": "satisfied", "order_id": " "}, ["properties.order_id"]),
        ({"answer": "satisfied", "order_id": ["o1"]}, ["properties.order_id"]),
        ({}, ["properties.answer", "properties.order_id"]),
        ({"answer": "satisfied", "order_id": "o1", "nps": 11}, ["properties.nps"]),
    ],
)
def test_a_bad_survey_answer_names_the_field(properties: dict[str, Any], fields: list[str]) -> None:
    line = _track("s-1", "Survey Answered", "2011-01-11T09:00:00Z", **properties)
    with pytest.raises(SegmentValidationError) as caught:
        list(read_segment_jsonl([b"", orjson.dumps(line)], shop_id="shop"))
    assert [e["field"] for e in caught.value.errors] == fields
    assert {e["index"] for e in caught.value.errors} == {1}


def _cart() -> list[Line]:
    return [
        _identify(),
        _track(
            "c-1", "Product Added", "2011-01-03T10:05:00Z", cart_id="c1", product_id="p1", price=20
        ),
    ]


def _opened(**properties: Any) -> Line:
    return _track("open-1", "Email Opened", "2011-01-03T18:00:00Z", **properties)


def test_without_an_open_the_opened_gated_reminder_stays(tmp_path: Path) -> None:
    sends, sim = _run(tmp_path, _cart())
    assert [step for step, _ in _of(sends, "abandoned_cart")] == ["reminder_1", "reminder_2"]
    (held,) = [d for d in sim.decisions if d.step == "reminder_3"]
    assert (held.decision, held.reason) == ("skipped", "condition")


def test_an_open_by_message_id_lets_the_opened_gated_reminder_go(tmp_path: Path) -> None:
    first = _sends(tmp_path, _cart())
    (reminder_1,) = [s for s in first if s["step"] == "reminder_1"]
    sends = _sends(tmp_path, [*_cart(), _opened(message_id=reminder_1["message_id"])])
    assert _of(sends, "abandoned_cart") == [
        ("reminder_1", "2011-01-03T13:05:00Z"),
        ("reminder_2", "2011-01-04T10:05:00Z"),
        ("reminder_3", "2011-01-06T10:05:00Z"),
    ]
    assert [s for s in sends if s["step"] == "reminder_1"] == [reminder_1]


def test_an_open_by_plan_and_step_lets_the_opened_gated_reminder_go(tmp_path: Path) -> None:
    sends = _sends(tmp_path, [*_cart(), _opened(plan="abandoned_cart", step="reminder_1")])
    steps = [step for step, _ in _of(sends, "abandoned_cart")]
    assert steps == ["reminder_1", "reminder_2", "reminder_3"]


def test_an_open_of_another_message_does_not(tmp_path: Path) -> None:
    sends = _sends(tmp_path, [*_cart(), _opened(message_id="not-a-send-of-this-run")])
    steps = [step for step, _ in _of(sends, "abandoned_cart")]
    assert steps == ["reminder_1", "reminder_2"]


def test_simulate_shows_the_progress_bar(tmp_path: Path) -> None:
    events = _write(tmp_path / "events.jsonl", [*_order(), *_cart()[1:]])
    count = len(list(read_segment_jsonl(events.read_bytes().splitlines(), shop_id="shop")))
    console = io.StringIO()
    simulate(events, UNTIL, tmp_path / "out.jsonl", progress=True, console_file=console)
    text = console.getvalue()
    assert "simulating" in text and f"{count}/{count}" in text

    quiet = io.StringIO()
    simulate(events, UNTIL, tmp_path / "quiet.jsonl", progress=False, console_file=quiet)
    assert "simulating" not in quiet.getvalue() and "Backtest" in quiet.getvalue()
