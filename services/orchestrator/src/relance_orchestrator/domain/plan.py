"""A plan as data: triggers, exits, re-entry rules and steps, with a condition vocabulary.

Merchants edit these as YAML (see `relance_orchestrator.plans`); the engine interprets them,
so a new plan of the same shape needs no new code.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relance_events.payloads import Channel, Purpose, SurveyAnswer

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]

EventKind = Literal[
    "order_completed",
    "order_refunded",
    "cart_changed",
    "checkout_started",
    "survey_answered",
    "contact_identified",
    "consent_changed",
    "email_opened",
    "link_clicked",
    "message_sent",
    "custom",
]
Op = Literal["eq", "ne", "gt", "ge", "lt", "le"]
FactName = Literal[
    "orders_count",
    "first_order_total",
    "last_order_total",
    "total_spent",
    "days_since_last_order",
    "days_since_first_order",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Delay(_Model):
    """A delay; months and days are calendar (wall-clock) arithmetic in the contact's zone."""

    months: Annotated[int, Field(ge=0, le=120)] = 0
    days: Annotated[int, Field(ge=0, le=3660)] = 0
    hours: Annotated[int, Field(ge=0, le=10_000)] = 0
    minutes: Annotated[int, Field(ge=0, le=100_000)] = 0

    @property
    def is_day_based(self) -> bool:
        return self.months > 0 or self.days > 0

    @property
    def clock_part(self) -> timedelta:
        return timedelta(hours=self.hours, minutes=self.minutes)

    def approx(self) -> timedelta:
        return timedelta(days=self.months * 31 + self.days) + self.clock_part


# --- conditions --------------------------------------------------------------------------


class Compare(_Model):
    """`fact op value` or `fact op ref` (the shop's average basket)."""

    kind: Literal["compare"]
    fact: FactName
    op: Op
    value: Decimal | None = None
    ref: Literal["average_basket"] | None = None

    @model_validator(mode="after")
    def _one_operand(self) -> Compare:
        if (self.value is None) == (self.ref is None):
            raise ValueError("compare needs exactly one of value / ref")
        return self


class NoOrderSince(_Model):
    """No order strictly after the anchor (`anchor` = the instance's anchor, or a step)."""

    kind: Literal["no_order_since"]
    since: str = "anchor"


class Opened(_Model):
    """At least one of these steps of this instance was opened (or clicked) before now."""

    kind: Literal["opened"]
    steps: tuple[Name, ...]


class Clicked(_Model):
    kind: Literal["clicked"]
    steps: tuple[Name, ...]


class CartIs(_Model):
    """The instance's cart (or the event's cart) is `non_empty` / `empty` / `open` (unpaid)."""

    kind: Literal["cart"]
    state: Literal["non_empty", "empty", "open"]


class CouponUnused(_Model):
    kind: Literal["coupon_unused"]


class SurveyAnswerIn(_Model):
    """The latest answer for the instance's order is one of `answers`."""

    kind: Literal["survey_answer_in"]
    answers: tuple[SurveyAnswer, ...]


class ConsentIs(_Model):
    kind: Literal["consent"]
    channel: Channel = "email"
    purpose: Purpose = "marketing"
    status: Literal["granted", "denied", "unknown"]


class UnopenedStreak(_Model):
    """The contact's last `count` marketing messages on `channel` were all left unopened."""

    kind: Literal["unopened_streak"]
    count: Annotated[int, Field(ge=1, le=50)]
    channel: Channel = "email"


class OrderHasItem(_Model):
    """The triggering (or last) order holds an item matching every given attribute."""

    kind: Literal["order_has_item"]
    category: str | None = None
    product_id: str | None = None
    sku: str | None = None


class SentWithin(_Model):
    """The contact was sent this plan's message (this step's, if given) within `within`
    before now (send records are kept 90 days, so longer windows see only those)."""

    kind: Literal["sent_within"]
    plan: Name
    step: Name | None = None
    within: Delay


class EventIs(_Model):
    """A field of the current event's payload is one of `values` (trigger/exit filters)."""

    kind: Literal["event_is"]
    field: Annotated[str, Field(max_length=64)]
    values: tuple[str, ...]


class Not(_Model):
    kind: Literal["not"]
    condition: Condition


class AnyOf(_Model):
    kind: Literal["any"]
    conditions: tuple[Condition, ...]


Condition = Annotated[
    Compare
    | NoOrderSince
    | Opened
    | Clicked
    | CartIs
    | CouponUnused
    | SurveyAnswerIn
    | ConsentIs
    | UnopenedStreak
    | OrderHasItem
    | SentWithin
    | EventIs
    | Not
    | AnyOf,
    Field(discriminator="kind"),
]
Not.model_rebuild()
AnyOf.model_rebuild()


# --- plan parts --------------------------------------------------------------------------

InstanceKeyKind = Literal["contact", "cart", "order", "year", "fixed"]


class Trigger(_Model):
    event: EventKind
    name: str | None = Field(default=None, description="custom event name, for event=custom")
    when: tuple[Condition, ...] = ()
    key: InstanceKeyKind = "contact"
    key_label: Name | None = Field(default=None, description="the key for key=fixed")
    anchor: Literal["event", "birthday"] = "event"

    @model_validator(mode="after")
    def _fixed_has_label(self) -> Trigger:
        if self.key == "fixed" and self.key_label is None:
            raise ValueError("key=fixed needs key_label")
        return self


class Exit(_Model):
    event: EventKind
    name: str | None = None
    when: tuple[Condition, ...] = ()
    match: Literal["any", "cart", "order"] = "any"
    after_step: Name | None = Field(
        default=None, description="only once this step has been sent or skipped"
    )


class Reentry(_Model):
    on_retrigger: Literal["ignore", "restart", "restart_if_unsent"] = "ignore"
    single_active: bool = True
    once_per_key: bool = False
    min_interval: Delay | None = None


class Variant(_Model):
    name: Name
    when: tuple[Condition, ...] = ()


class Coupon(_Model):
    """A personal code per plan instance. `discount` is what the code gives, as messages
    show it ("15%", "10 €"): the shop's checkout must honour codes with this prefix."""

    prefix: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,12}$")]
    valid_days: Annotated[int, Field(ge=1, le=366)]
    discount: Annotated[str, Field(min_length=1, max_length=40)]


Include = Literal[
    "cart", "last_order", "first_order", "order", "coupon", "survey_answer", "recommendations"
]


class Step(_Model):
    name: Name
    delay: Delay = Field(default_factory=Delay)
    anchor: str = Field(default="anchor", description="'anchor' or an earlier step's name")
    event: EventKind | None = Field(default=None, description="an event arms this step")
    after_step: Name | None = None
    within: Delay | None = None
    when: tuple[Condition, ...] = ()
    variants: tuple[Variant, ...] = ()
    channel: Channel = "email"
    purpose: Purpose | None = None
    template: str | None = None
    send_hour: Annotated[int, Field(ge=0, le=23)] | None = None
    max_hold: Delay = Field(default_factory=lambda: Delay(days=2))
    include: tuple[Include, ...] = ()
    coupon: Coupon | None = Field(
        default=None,
        description="this step's own offer: its own code, valid from the step's due time, "
        "sent instead of the plan's (the step must include `coupon`)",
    )

    @property
    def is_event_step(self) -> bool:
        return self.event is not None


class Plan(_Model):
    name: Name
    description: str = ""
    enabled: bool = True
    priority: Annotated[int, Field(ge=1, le=1000)] = 100
    purpose: Purpose = "marketing"
    send_hour: Annotated[int, Field(ge=0, le=23)] | None = None
    recurrence: Literal["none", "yearly"] = "none"
    coupon: Coupon | None = None
    triggers: tuple[Trigger, ...]
    exits: tuple[Exit, ...] = ()
    reentry: Reentry = Field(default_factory=Reentry)
    steps: tuple[Step, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate step names in plan {self.name}")
        if not self.triggers:
            raise ValueError("a plan needs at least one trigger")
        seen: set[str] = set()
        for step in self.steps:
            if step.anchor != "anchor" and step.anchor not in seen:
                raise ValueError(f"step {step.name}: anchor {step.anchor} is not an earlier step")
            if step.is_event_step:
                if step.after_step is None or step.after_step not in seen:
                    raise ValueError(f"event step {step.name} needs an earlier after_step")
            elif step.after_step is not None:
                raise ValueError(f"time step {step.name} cannot have after_step")
            if step.coupon is not None and "coupon" not in step.include:
                raise ValueError(f"step {step.name} has its own coupon but does not include it")
            seen.add(step.name)
        for exit_ in self.exits:
            if exit_.after_step is not None and exit_.after_step not in seen:
                raise ValueError(f"exit after unknown step {exit_.after_step}")
        return self

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def time_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if not s.is_event_step)
