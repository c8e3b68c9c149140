"""Per-contact state, and every allowed transition kept in tables (h11 style).

An action missing from a table raises `IllegalTransition`; states are immutable, so a
raise leaves the caller's state as it was.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Final, Literal

from msgspec import field

from relance_orchestrator.domain.errors import IllegalTransition
from relance_orchestrator.domain.evolve import Frozen
from relance_orchestrator.domain.facts import ContactFacts

StepStatus = Literal["waiting", "scheduled", "sent", "skipped", "dropped"]
StepAction = Literal["schedule", "hold", "send", "skip", "drop"]
InstanceStatus = Literal["active", "finished"]
InstanceAction = Literal["advance", "finish"]
FinishReason = Literal["completed", "goal_reached", "restarted", "expired"]

STEP_TRANSITIONS: Final[dict[tuple[StepStatus, StepAction], StepStatus]] = {
    ("waiting", "schedule"): "scheduled",
    ("waiting", "skip"): "skipped",  # an event step whose window closed unanswered
    ("scheduled", "hold"): "scheduled",
    ("scheduled", "send"): "sent",
    ("scheduled", "skip"): "skipped",
    ("scheduled", "drop"): "dropped",
}
INSTANCE_TRANSITIONS: Final[dict[tuple[InstanceStatus, InstanceAction], InstanceStatus]] = {
    ("active", "advance"): "active",
    ("active", "finish"): "finished",
}
SETTLED: Final[frozenset[StepStatus]] = frozenset({"sent", "skipped", "dropped"})


def step_transition(status: StepStatus, action: StepAction) -> StepStatus:
    try:
        return STEP_TRANSITIONS[(status, action)]
    except KeyError:
        raise IllegalTransition(f"step cannot {action} when {status}") from None


def instance_transition(status: InstanceStatus, action: InstanceAction) -> InstanceStatus:
    try:
        return INSTANCE_TRANSITIONS[(status, action)]
    except KeyError:
        raise IllegalTransition(f"plan instance cannot {action} when {status}") from None


class StepRecord(Frozen, frozen=True, kw_only=True):
    status: StepStatus = "waiting"
    due_at: datetime | None = None
    first_due_at: datetime | None = None
    settled_at: datetime | None = None
    message_id: str | None = None
    variant: str | None = None

    def apply(self, action: StepAction, **update: object) -> StepRecord:
        return self.evolve({"status": step_transition(self.status, action), **update})


class Instance(Frozen, frozen=True, kw_only=True):
    plan: str
    key: str
    instance_id: str
    started_at: datetime
    anchor_at: datetime
    status: InstanceStatus = "active"
    steps: dict[str, StepRecord]
    cart_id: str | None = None
    order_id: str | None = None
    coupon: str | None = None
    coupon_expires_at: datetime | None = None
    window_until: datetime | None = None

    @property
    def sent_any(self) -> bool:
        return any(r.status == "sent" for r in self.steps.values())

    @property
    def next_at(self) -> datetime | None:
        """When this instance next needs a wake-up."""
        # one pass, no lists: the engine asks this several times per decision
        earliest: datetime | None = None
        waiting = False
        for record in self.steps.values():
            status = record.status
            if status == "scheduled":
                due = record.due_at
                if due is not None and (earliest is None or due < earliest):
                    earliest = due
            elif status == "waiting":
                waiting = True
        window = self.window_until
        if waiting and window is not None and (earliest is None or window < earliest):
            earliest = window
        return earliest

    def with_step(self, name: str, record: StepRecord) -> Instance:
        instance_transition(self.status, "advance")
        return self.evolve({"steps": {**self.steps, name: record}})


class HistoryEntry(Frozen, frozen=True, kw_only=True):
    key: str
    started_at: datetime


class PlanState(Frozen, frozen=True, kw_only=True):
    plan: str
    instances: dict[str, Instance] = field(default_factory=dict)
    history: tuple[HistoryEntry, ...] = ()

    def wakeups(self) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for instance in self.instances.values():
            at = instance.next_at
            if at is not None:
                out[wakeup_key(instance.plan, instance.key)] = at
        return out


class ContactState(Frozen, frozen=True, kw_only=True):
    shop_id: str
    contact_key: str
    facts: ContactFacts
    plans: dict[str, PlanState] = field(default_factory=dict)
    merged_into: str | None = None  # set once aliased: this contact's events go to that one

    @classmethod
    def new(cls, shop_id: str, contact_key: str) -> ContactState:
        # A copy of one validated blank state: a first event for a contact is common (every
        # new visitor), and validating the nested defaults again cost more than the event.
        blank = _blank_state()
        return blank.evolve(
            {
                "shop_id": shop_id,
                "contact_key": contact_key,
                "facts": blank.facts.evolve({"contact_key": contact_key}),
            }
        )

    def plan_state(self, plan: str) -> PlanState:
        return self.plans.get(plan) or PlanState(plan=plan)

    def wakeups(self) -> dict[str, datetime]:
        """The wake-up each active instance needs, by wake-up key."""
        out: dict[str, datetime] = {}
        for plan_state in self.plans.values():
            out.update(plan_state.wakeups())
        return out

    def wakeup_at(self, key: str) -> datetime | None:
        """The wake-up needed under one key (`wakeups().get(key)`, without the others)."""
        plan, _, instance_key = key.partition("/")
        plan_state = self.plans.get(plan)
        instance = plan_state.instances.get(instance_key) if plan_state is not None else None
        return instance.next_at if instance is not None else None


@cache
def _blank_state() -> ContactState:
    return ContactState(shop_id="", contact_key="", facts=ContactFacts(contact_key=""))


def wakeup_key(plan: str, instance_key: str) -> str:
    return f"{plan}/{instance_key}"
