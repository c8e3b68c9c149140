"""`timer_writes`: the net timer changes one contact's decisions leave behind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from relance_events.payloads import ContactAliased
from relance_orchestrator.domain import engine as engine_module
from relance_orchestrator.domain.commands import CancelWakeups, Command, ScheduleWakeup
from relance_orchestrator.domain.engine import timer_commands, wakeup_changes
from relance_orchestrator.domain.state import ContactState, Instance, PlanState, StepRecord
from relance_orchestrator.ports import TimerWrite
from relance_orchestrator.services import timer_writes

from .conftest import Harness

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def _waiting_on(at: datetime) -> ContactState:
    instance = Instance(
        plan="cross_sell",
        key="contact",
        instance_id="i1",
        started_at=T0,
        anchor_at=T0,
        steps={"recommendation": StepRecord(status="scheduled", due_at=at, first_due_at=at)},
    )
    plans = {"cross_sell": PlanState(plan="cross_sell", instances={"contact": instance})}
    return ContactState.new("shop", "c1").evolve({"plans": plans})


def test_a_fired_timer_is_deleted_when_nothing_needs_it() -> None:
    state = ContactState.new("shop", "c1")
    assert timer_writes(state, [], ["welcome_pack/first_order"]) == [
        TimerWrite("shop", "c1", "welcome_pack/first_order", None)
    ]


def test_a_fired_timer_stays_when_the_state_still_waits_under_its_key() -> None:
    later = T0 + timedelta(days=2)
    state = _waiting_on(later)
    assert timer_writes(state, [], ["cross_sell/contact"]) == [
        TimerWrite("shop", "c1", "cross_sell/contact", later)
    ]


def test_decisions_apply_in_order_and_the_last_one_wins() -> None:
    state = ContactState.new("shop", "c1")
    commands = [
        ScheduleWakeup("birthday/2026", T0),
        CancelWakeups(("birthday/2026", "anti_churn/contact")),
        ScheduleWakeup("anti_churn/contact", T0 + timedelta(days=180)),
    ]
    writes = timer_writes(state, commands, ["welcome_pack/first_order"])
    assert writes == [
        TimerWrite("shop", "c1", "welcome_pack/first_order", None),
        TimerWrite("shop", "c1", "birthday/2026", None),
        TimerWrite("shop", "c1", "anti_churn/contact", T0 + timedelta(days=180)),
    ]
    assert len({w.key for w in writes}) == len(writes)  # one write per timer


def test_timer_commands_look_only_at_changed_plans_and_miss_nothing(
    harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a year of one contact's life (orders, carts, opens, survey answers, an alias),
    every decision's timer commands equal the diff of all its wake-ups; and `wakeup_at`
    answers as `wakeups()` does."""
    compared = 0

    def checked(before: ContactState, after: ContactState) -> tuple[Command, ...]:
        nonlocal compared
        commands = timer_commands(before, after)
        assert commands == wakeup_changes(before.wakeups(), after.wakeups())
        wanted = after.wakeups()
        for key in {*wanted, *before.wakeups(), "nope/x", "birthday/1999"}:
            assert after.wakeup_at(key) == wanted.get(key)
        compared += 1
        return commands

    monkeypatch.setattr(engine_module, "timer_commands", checked)
    h = harness()
    h.identify(T0, birthday=date(1990, 5, 17))
    h.consent(T0)
    h.cart(T0 + timedelta(hours=1), "k1", 2)
    h.until(T0 + timedelta(days=2))
    h.opened(T0 + timedelta(days=2, hours=1), "abandoned_cart", "reminder_1")
    h.order(T0 + timedelta(days=3), "o1", "120", cart_id="k1")
    h.until(T0 + timedelta(days=10))
    h.answer(T0 + timedelta(days=11), "o1", "not_satisfied")
    h.cart(T0 + timedelta(days=20), "k2", 1, contact="anon:v9")
    h.emit(ContactAliased(user_id="c1", previous_id="v9"), T0 + timedelta(days=20, hours=1))
    h.order(T0 + timedelta(days=40), "o2", "30")
    h.until(T0 + timedelta(days=400))
    assert compared > 20 and len(h.sends()) > 8
