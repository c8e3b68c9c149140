"""Alias merges, the message context the sender renders from, and `relance simulate`."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from relance_events import deterministic_id
from relance_events.payloads import (
    ContactAliased,
    ContactIdentified,
    ContactTraits,
    LineItem,
    LoyaltyTierChanged,
)
from relance_orchestrator.cli import simulate
from relance_orchestrator.domain.commands import CancelWakeups, ScheduleWakeup
from relance_orchestrator.domain.errors import IllegalTransition, PlanDefinitionError

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
D = timedelta(days=1)

HarnessFactory = Callable[..., Any]


def test_alias_moves_the_anonymous_cart_plan_and_facts(harness: HarnessFactory) -> None:
    h = harness()
    h.order(T0 - 40 * D, "old", "70", contact="anon:a1")
    h.cart(T0, "k1", 2, contact="anon:a1")
    h.consent(T0, contact="anon:a1", status="denied")
    h.identify(T0, contact="u1")
    commands = h.emit(ContactAliased(user_id="u1", previous_id="a1"), T0 + H, "u1")
    states = h.sim.states
    known, anon = states["u1"], states["anon:a1"]
    assert anon.merged_into == "u1" and anon.plans == {} and anon.facts.orders_count == 0
    assert "k1" in known.facts.carts and known.facts.orders_count == 1
    assert known.facts.consent_for("email", "marketing") == "denied"
    assert "cart:k1" in known.plans["abandoned_cart"].instances
    assert any(
        isinstance(c, ScheduleWakeup) and c.key == "abandoned_cart/cart:k1" for c in commands
    )
    assert ("anon:a1", "abandoned_cart/cart:k1") not in h.sim.pending_timers()
    assert ("u1", "abandoned_cart/cart:k1") in h.sim.pending_timers()
    # an objection on the anonymous side stops marketing to the known contact
    h.until(T0 + 4 * D)
    assert h.sends("abandoned_cart") == []
    # later events under the anonymous key follow the merge
    h.order(T0 + 5 * D, "o2", "20", contact="anon:a1")
    assert h.sim.states["u1"].facts.orders_count == 2


def test_alias_cancels_anonymous_timers_and_is_a_noop_when_replayed(
    harness: HarnessFactory,
) -> None:
    h = harness()
    h.consent(T0, contact="anon:a2")
    h.cart(T0, "k2", 1, contact="anon:a2")
    engine = h.sim.engine
    known = h.sim.states.get("u2") or type(h.sim.states["anon:a2"]).new("shop", "u2")
    _, _, emptied, anon_commands = engine.merge(known, h.sim.states["anon:a2"], T0, h.sim.shop)
    cancelled = [k for c in anon_commands if isinstance(c, CancelWakeups) for k in c.keys]
    assert "abandoned_cart/cart:k2" in cancelled and emptied.merged_into == "u2"
    with pytest.raises(IllegalTransition):
        engine.merge(known, known, T0, h.sim.shop)
    h.emit(ContactAliased(user_id="u2", previous_id="a2"), T0 + H, "u2")
    before = h.sim.states["u2"]
    assert h.emit(ContactAliased(user_id="u2", previous_id="a2"), T0 + 2 * H, "u2") == ()
    assert h.sim.states["u2"] == before


def test_message_context_carries_what_the_sender_renders(harness: HarnessFactory) -> None:
    h = harness()
    traits = ContactTraits(
        email="ann@example.com", first_name="Ann", phone="+33612345678", locale="fr-FR"
    )
    h.emit(ContactIdentified(user_id="c1", traits=traits), T0)
    h.emit(
        LoyaltyTierChanged(user_id="c1", current="premium", as_of=T0),
        T0,
    )
    h.order(T0, "o1", "80", category="mugs")
    welcome = h.sends("welcome_pack")[0]
    assert welcome.locale == "fr-FR"
    assert welcome.context["contact"] == {
        "first_name": "Ann",
        "last_name": None,
        "email": "ann@example.com",
        "phone": "+33612345678",
        "locale": "fr-FR",
        "timezone": None,
        "country": None,
        "loyalty_tier": "premium",
    }
    first = welcome.context["first_order"]
    assert first["order_id"] == "o1" and first["items"][0]["product_id"] == "p1"
    h.until(T0 + 31 * D)
    recommendation = h.sends("cross_sell")[0]
    assert recommendation.context["recommendations"] == {
        "strategy": "cross_sell",
        "based_on_product_ids": ["p1"],
        "based_on_categories": ["mugs"],
    }
    h.until(T0 + 200 * D)
    churn = h.sends("anti_churn")[0]
    assert churn.context["coupon"]["code"].startswith("MISSYOU-")


def _events(path: Path) -> Path:
    lines: list[dict[str, Any]] = []
    for i in range(30):
        user = f"u{i}"
        day = datetime(2011, 1, 1 + i % 20, 9 + i % 5, tzinfo=UTC)
        lines.append(
            {
                "type": "identify",
                "messageId": f"id-{i}",
                "userId": user,
                "timestamp": day.isoformat(),
                "traits": {"email": f"{user}@example.com", "birthday": f"1990-0{1 + i % 9}-15"},
            }
        )
        lines.append(
            {
                "type": "track",
                "messageId": f"o-{i}",
                "userId": user,
                "event": "Order Completed",
                "timestamp": (day + timedelta(minutes=5)).isoformat(),
                "properties": {"order_id": f"o{i}", "total": 10 + 7 * i},
            }
        )
        if i % 3 == 0:
            lines.append(
                {
                    "type": "track",
                    "messageId": f"r-{i}",
                    "userId": user,
                    "event": "Order Completed",
                    "timestamp": (day + timedelta(days=2 + i % 9)).isoformat(),
                    "properties": {"order_id": f"r{i}", "total": 25},
                }
            )
        if i % 4 == 0:
            lines.append(
                {
                    "type": "track",
                    "messageId": f"s-{i}",
                    "userId": user,
                    "event": "Survey Answered",
                    "timestamp": (day + timedelta(days=8)).isoformat(),
                    "properties": {"answer": "satisfied", "order_id": f"o{i}"},
                }
            )
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    return path


def test_simulate_cli_is_byte_identical_and_prints_the_summary(tmp_path: Path) -> None:
    events = _events(tmp_path / "events.jsonl")
    until = datetime(2011, 12, 31, tzinfo=UTC)
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        console = io.StringIO()
        simulate(events, until, tmp_path / name, progress=True, console_file=console)
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1] and outputs[0]
    sends = [orjson.loads(line) for line in outputs[0].splitlines()]
    assert {s["plan"] for s in sends} >= {"welcome_pack", "cross_sell", "satisfaction_survey"}
    for send in sends:
        assert set(send) >= {"user_id", "plan", "step", "variant", "channel", "at", "message_id"}
        assert send["at"].endswith("Z")
    text = console.getvalue()
    for header in ("plan", "messages", "contacts", "attributed orders", "revenue"):
        assert header in text
    assert "welcome_pack" in text and not (tmp_path / "a.jsonl.partial").exists()


def test_simulate_config_overrides_plan_delays(tmp_path: Path) -> None:
    events = _events(tmp_path / "events.jsonl")
    config = tmp_path / "config.yaml"
    config.write_text(
        "shop: {average_basket: 100}\n"
        "plans:\n"
        "  welcome_pack: {steps: {second_purchase: {delay: {days: 6}}}}\n"
        "  birthday: {enabled: false}\n"
    )
    until = datetime(2011, 12, 31, tzinfo=UTC)
    simulate(events, until, tmp_path / "out.jsonl", config, False, console_file=io.StringIO())
    sends = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert not [s for s in sends if s["plan"] == "birthday"]
    by_user: dict[str, dict[str, str]] = {}
    for s in sends:
        if s["plan"] == "welcome_pack":
            by_user.setdefault(s["user_id"], {})[s["step"]] = s["at"]
    gaps = {
        datetime.fromisoformat(v["second_purchase"]) - datetime.fromisoformat(v["welcome"])
        for v in by_user.values()
        if "second_purchase" in v
    }
    assert gaps == {timedelta(days=6)}
    vip = [s for s in sends if s["plan"] == "welcome_pack" and s["variant"] == "vip"]
    assert vip and all(int(s["user_id"][1:]) * 7 + 10 > 100 for s in vip)

    bad = tmp_path / "bad.json"
    bad.write_text('{"plans": {"welcome_pack": {"steps": {"nope": {}}}}}')
    with pytest.raises(PlanDefinitionError):
        simulate(events, until, tmp_path / "x.jsonl", bad, False, console_file=io.StringIO())


def test_message_ids_are_deterministic_per_instance(harness: HarnessFactory) -> None:
    h = harness()
    h.order(T0, "o1")
    instance = str(deterministic_id("shop", "c1", "welcome_pack", "first_order", T0.isoformat()))
    expected = str(deterministic_id("shop", "c1", "welcome_pack", "welcome", instance))
    assert h.sends("welcome_pack")[0].message_id == expected


def test_a_reminders_cart_items_carry_every_field_of_the_events_line_items(
    harness: HarnessFactory,
) -> None:
    h = harness()
    h.consent(T0)
    h.cart(T0, "k1", 2)
    h.until(T0 + 4 * H)
    reminder = h.sends("abandoned_cart")[0]
    items = [LineItem(product_id=f"p{i}", price=Decimal(10)) for i in range(2)]
    assert reminder.context["cart"]["items"] == [i.model_dump(mode="json") for i in items]
