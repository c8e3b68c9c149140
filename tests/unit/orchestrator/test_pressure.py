"""Consent, quiet hours and the cross-plan frequency cap; the state-machine tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relance_events import new_event
from relance_events.payloads import OrderCompleted
from relance_orchestrator.adapters.state_codec import pack_state, unpack_state
from relance_orchestrator.domain.commands import DecisionRecorded, Wakeup
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.errors import IllegalTransition
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.policy import FrequencyCap, Policy
from relance_orchestrator.domain.state import (
    STEP_TRANSITIONS,
    ContactState,
    StepRecord,
    step_transition,
)
from relance_orchestrator.plans.loader import load_plans, parse_plan

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)  # Monday
D = timedelta(days=1)
H = timedelta(hours=1)


def _alert(name: str, priority: int, channel: str = "email", delay_h: int = 0) -> Any:
    return parse_plan(
        f"""
name: {name}
priority: {priority}
triggers: [{{event: custom, name: Ping, key: contact}}]
reentry: {{on_retrigger: restart}}
steps:
  - name: alert
    channel: {channel}
    delay: {{hours: {delay_h}}}
    max_hold: {{days: 3}}
"""
    )


def _ping(h: Any, at: datetime) -> None:
    from relance_events.payloads import CustomTracked

    h.emit(CustomTracked(name="Ping"), at)


def test_marketing_email_basis(harness: Any) -> None:
    h = harness(plans=[_alert("a", 1)])
    _ping(h, T0)  # prospect, no consent: dropped, recorded
    assert h.sends() == []
    assert [(d.decision, d.reason) for d in h.sim.decisions] == [("dropped", "no_basis")]
    h.order(T0 + 1 * H, "o1")  # a customer: soft opt-in
    _ping(h, T0 + 2 * H)
    assert len(h.sends()) == 1
    h.consent(T0 + 3 * H, status="denied")  # objection: nothing more
    _ping(h, T0 + 4 * H)
    assert len(h.sends()) == 1
    assert h.sim.decisions[-1].reason == "objection"


def test_objection_stops_marketing_but_not_the_order_survey(harness: Any) -> None:
    h = harness()
    h.consent(T0 - D, status="denied")
    h.order(T0, "o1")
    h.until(T0 + 60 * D)
    assert {s.plan for s in h.sends()} == {"satisfaction_survey"}


def test_marketing_sms_only_with_sms_consent(harness: Any) -> None:
    h = harness(plans=[_alert("a", 1, "sms")])
    h.order(T0 - D, "o1")
    _ping(h, T0)
    assert h.sends() == []
    h.consent(T0, channel="sms")
    _ping(h, T0 + H)
    assert [s.channel for s in h.sends()] == ["sms"]


@pytest.mark.parametrize(
    ("due", "sent_at"),
    [
        (datetime(2025, 3, 3, 12, 0, tzinfo=UTC), datetime(2025, 3, 3, 12, 0, tzinfo=UTC)),
        (datetime(2025, 3, 3, 19, 30, tzinfo=UTC), datetime(2025, 3, 4, 10, 0, tzinfo=UTC)),
        (datetime(2025, 3, 8, 20, 0, tzinfo=UTC), datetime(2025, 3, 10, 10, 0, tzinfo=UTC)),
        (datetime(2025, 3, 9, 11, 0, tzinfo=UTC), datetime(2025, 3, 10, 10, 0, tzinfo=UTC)),
        (datetime(2025, 3, 4, 7, 0, tzinfo=UTC), datetime(2025, 3, 4, 10, 0, tzinfo=UTC)),
    ],
)
def test_sms_quiet_hours_mon_sat_10_19(harness: Any, due: datetime, sent_at: datetime) -> None:
    h = harness(plans=[_alert("a", 1, "sms")])
    h.consent(due - D, channel="sms")
    _ping(h, due)
    h.until(due + 5 * D)
    assert [s.at for s in h.sends()] == [sent_at]
    held = [d for d in h.sim.decisions if d.reason == "quiet_hours"]
    assert len(held) == (0 if due == sent_at else 1)


def test_sms_quiet_hours_use_the_contact_timezone(harness: Any) -> None:
    h = harness(plans=[_alert("a", 1, "sms")])
    h.identify(T0 - D, timezone="America/New_York")
    h.consent(T0 - D, channel="sms")
    _ping(h, datetime(2025, 3, 4, 13, 0, tzinfo=UTC))  # 08:00 in New York
    h.until(T0 + 5 * D)
    assert [s.at for s in h.sends()] == [datetime(2025, 3, 4, 15, 0, tzinfo=UTC)]


def test_frequency_cap_serves_priority_then_holds_then_drops(harness: Any) -> None:
    policy = Policy(email_cap=FrequencyCap(max_messages=1, window=timedelta(days=2)))
    plans = [_alert("low", 50), _alert("high", 1), _alert("late", 60, delay_h=0)]
    h = harness(plans=plans, policy=policy)
    h.order(T0 - 10 * D, "o1")
    _ping(h, T0)
    h.until(T0 + 10 * D)
    # high first; low held 2 days then sent; late held past its 3-day max_hold: dropped
    assert [(s.plan, s.at) for s in h.sends()] == [("high", T0), ("low", T0 + 2 * D)]
    decisions = [(d.plan, d.decision, d.reason) for d in h.sim.decisions]
    assert ("low", "held", "frequency_cap") in decisions
    assert ("late", "dropped", "frequency_cap") in decisions


def test_step_transition_table_is_exhaustive_and_strict() -> None:
    assert step_transition("scheduled", "send") == "sent"
    for status in ("waiting", "scheduled", "sent", "skipped", "dropped"):
        for action in ("schedule", "hold", "send", "skip", "drop"):
            if (status, action) in STEP_TRANSITIONS:
                continue
            with pytest.raises(IllegalTransition):
                step_transition(status, action)  # type: ignore[arg-type]
    sent = StepRecord(status="sent")
    with pytest.raises(IllegalTransition):
        sent.apply("send")
    assert sent.status == "sent"


def test_illegal_inputs_raise_and_change_nothing() -> None:
    engine = Engine(load_plans())
    shop = ShopFacts(shop_id="shop")
    state = ContactState.new("shop", "c1")
    other = new_event(
        OrderCompleted(order_id="o1", total=1),
        shop_id="shop",
        contact_key="c2",  # type: ignore[arg-type]
        source="t",
        occurred_at=T0,
    )
    with pytest.raises(IllegalTransition):
        engine.decide(state, other, T0, shop)
    with pytest.raises(IllegalTransition):
        engine.decide(state, Wakeup("x", T0 + H), T0, shop)
    assert state == ContactState.new("shop", "c1")


def test_replayed_event_and_double_wakeup_send_nothing_new() -> None:
    engine = Engine(load_plans())
    shop = ShopFacts(shop_id="shop")
    event = new_event(
        OrderCompleted(order_id="o1", total=1),
        shop_id="shop",
        contact_key="c1",  # type: ignore[arg-type]
        source="t",
        occurred_at=T0,
    )
    s1, c1 = engine.decide(ContactState.new("shop", "c1"), event, T0, shop)
    s2, c2 = engine.decide(s1, event, T0 + H, shop)
    assert c1 and c2 == () and s2 == s1
    s3, c3 = engine.decide(s2, Wakeup("cross_sell/contact", T0 + 30 * D), T0 + 30 * D, shop)
    s4, c4 = engine.decide(s3, Wakeup("cross_sell/contact", T0 + 30 * D), T0 + 30 * D, shop)
    assert sum(1 for c in c3 if type(c).__name__ == "RequestMessage") >= 1
    assert not any(type(c).__name__ == "RequestMessage" for c in c4)
    # the state round-trips through what PostgreSQL stores
    assert unpack_state(pack_state(s4)) == s4


def test_decisions_are_recorded_not_silent(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.until(datetime(2025, 9, 30, tzinfo=UTC))
    skipped = [d for d in h.sim.decisions if isinstance(d, DecisionRecorded)]
    assert ("anti_churn", "reminder_3", "skipped", "condition") in [
        (d.plan, d.step, d.decision, d.reason) for d in skipped
    ]
