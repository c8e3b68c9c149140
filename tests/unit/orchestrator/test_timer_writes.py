"""`timer_writes`: the net timer changes one contact's decisions leave behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relance_orchestrator.domain.commands import CancelWakeups, ScheduleWakeup
from relance_orchestrator.domain.state import ContactState, Instance, PlanState, StepRecord
from relance_orchestrator.ports import TimerWrite
from relance_orchestrator.services import timer_writes

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
