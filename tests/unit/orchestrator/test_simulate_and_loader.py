"""The backtest over Segment JSONL, and the plan loader."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.errors import PlanDefinitionError
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.plans.loader import DEFAULT_PLANS, EXAMPLE_PLANS, load_plans, parse_plan
from relance_orchestrator.simulate import simulate_segment_file, summarize


def _lines() -> list[dict[str, object]]:
    return [
        {
            "type": "identify",
            "messageId": "m1",
            "userId": "u1",
            "timestamp": "2011-01-03T10:00:00Z",
            "traits": {"email": "a@example.com"},
        },
        {
            "type": "track",
            "messageId": "m2",
            "userId": "u1",
            "event": "Order Completed",
            "timestamp": "2011-01-03T10:05:00Z",
            "properties": {"order_id": "o1", "total": 80, "currency": "GBP"},
        },
        {
            "type": "track",
            "messageId": "m3",
            "userId": "u1",
            "event": "Email Opened",
            "timestamp": "2011-01-04T09:00:00Z",
            "properties": {"plan": "welcome_pack", "step": "welcome"},
        },
        {
            "type": "track",
            "messageId": "m4",
            "userId": "u1",
            "event": "Order Completed",
            "timestamp": "2011-01-05T10:05:00Z",
            "properties": {"order_id": "o2", "total": 30, "currency": "GBP"},
        },
    ]


def _run(tmp_path: Path) -> tuple[bytes, list[object]]:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in _lines()) + b"\n")
    out = io.BytesIO()
    sim = simulate_segment_file(
        path,
        datetime(2011, 3, 1, tzinfo=UTC),
        out,
        engine=Engine(load_plans()),
        shop=ShopFacts(shop_id="shop", average_basket=Decimal(50)),
    )
    return out.getvalue(), list(summarize(sim))


def test_simulation_writes_sends_and_is_byte_identical(tmp_path: Path) -> None:
    first, summary = _run(tmp_path)
    second, _ = _run(tmp_path)
    assert first == second
    sends = [orjson.loads(line) for line in first.splitlines()]
    assert sends[0] == {
        "at": "2011-01-03T10:05:00Z",
        "channel": "email",
        "message_id": sends[0]["message_id"],
        "plan": "welcome_pack",
        "plan_instance": sends[0]["plan_instance"],
        "step": "welcome",
        "user_id": "u1",
        "variant": "vip",
    }
    # the repeat purchase inside 4 days ended the welcome pack; it is attributed to it
    assert [(s["plan"], s["step"]) for s in sends if s["plan"] == "welcome_pack"] == [
        ("welcome_pack", "welcome")
    ]
    by_plan = {row.plan: row for row in summary}  # type: ignore[attr-defined]
    assert by_plan["welcome_pack"].attributed_orders == 1
    assert by_plan["welcome_pack"].revenue == Decimal(30)


def test_loader_ships_the_six_plans_and_examples() -> None:
    plans = load_plans(examples=EXAMPLE_PLANS)
    assert [p.name for p in plans] == [*DEFAULT_PLANS, *EXAMPLE_PLANS]
    steps = {p.name: [s.name for s in p.steps] for p in plans}
    assert steps["satisfaction_survey"] == ["survey", "thank_you", "reassurance"]
    assert steps["abandoned_cart"] == ["reminder_1", "reminder_2", "reminder_3"]


def test_merchant_override_changes_a_delay_without_code(tmp_path: Path) -> None:
    text = (
        Path(__file__).parents[3]
        / "services/orchestrator/src/relance_orchestrator/plans/cross_sell.yaml"
    ).read_text()
    (tmp_path / "cross_sell.yaml").write_text(text.replace("days: 30", "days: 20"))
    plan = {p.name: p for p in load_plans(tmp_path)}["cross_sell"]
    assert plan.steps[0].delay.days == 20


@pytest.mark.parametrize(
    "text",
    [
        "name: x\ntriggers: []\nsteps: []\n",
        "name: x\ntriggers: [{event: order_completed}]\nsteps: [{name: a, anchor: b}]\n",
        "name: x\ntriggers: [{event: order_completed}]\nsteps: [{name: a, colour: red}]\n",
        ":\n- not yaml",
    ],
)
def test_bad_plans_are_refused(text: str) -> None:
    with pytest.raises(PlanDefinitionError):
        parse_plan(text)
