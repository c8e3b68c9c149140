"""The pure engine: `decide(state, input, now) -> (new_state, commands)`.

`PlanMachine` interprets one plan for one contact; `Engine` folds the contact's facts,
runs every plan (in priority order, so simultaneous messages are served by priority under
the frequency cap), then derives the timer commands by comparing the wake-ups the state
needs before and after. Nothing here performs I/O or reads the clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from relance_events import Event, deterministic_id
from relance_events.payloads import (
    CartChanged,
    CheckoutStarted,
    ConsentChanged,
    ContactAliased,
    ContactIdentified,
    CustomTracked,
    EmailOpened,
    LinkClicked,
    MessageSent,
    OrderCompleted,
    OrderRefunded,
    Payload,
    SurveyAnswered,
)
from relance_orchestrator.domain.commands import (
    CancelWakeups,
    Command,
    DecisionReason,
    DecisionRecorded,
    Finish,
    OrderAttributed,
    RequestMessage,
    ScheduleWakeup,
    Wakeup,
)
from relance_orchestrator.domain.conditions import Context, all_hold
from relance_orchestrator.domain.errors import IllegalTransition
from relance_orchestrator.domain.facts import (
    FACT_PAYLOADS,
    CartLine,
    ContactFacts,
    Order,
    SendRecord,
    ShopFacts,
    record_send,
    reduce_facts,
)
from relance_orchestrator.domain.merge import merge_states
from relance_orchestrator.domain.plan import EventKind, Plan, Step, Trigger
from relance_orchestrator.domain.policy import Policy, cap_release, legal_basis
from relance_orchestrator.domain.state import (
    SETTLED,
    ContactState,
    FinishReason,
    HistoryEntry,
    Instance,
    PlanState,
    StepRecord,
    instance_transition,
)
from relance_orchestrator.domain.timing import due_at, next_birthday_anchor, zone

Input = Event[Any] | Wakeup

HISTORY_KEPT = timedelta(days=400)
_WAITING = StepRecord()  # immutable, so every new instance can share it
MAX_STEPS_PER_DECISION = 1000

_KINDS: dict[type[Payload], EventKind] = {
    OrderCompleted: "order_completed",
    OrderRefunded: "order_refunded",
    CartChanged: "cart_changed",
    CheckoutStarted: "checkout_started",
    SurveyAnswered: "survey_answered",
    ContactIdentified: "contact_identified",
    ConsentChanged: "consent_changed",
    EmailOpened: "email_opened",
    LinkClicked: "link_clicked",
    MessageSent: "message_sent",
    CustomTracked: "custom",
}


def event_kind(payload: Payload) -> EventKind | None:
    return _KINDS.get(type(payload))


def _matches(kind: EventKind, name: str | None, payload: Payload) -> bool:
    if event_kind(payload) != kind:
        return False
    return name is None or (isinstance(payload, CustomTracked) and payload.name == name)


@dataclass(frozen=True, slots=True)
class Interest:
    """The events a set of plans can act on; a consumer may skip the others unread.

    `types` are event types (what a consumer can filter by, before decoding);
    `custom_names` narrows `custom.tracked` to the names some plan listens to (None: every
    name, as a plan listening to any custom event needs)."""

    types: frozenset[str]
    custom_names: frozenset[str] | None

    def wants(self, event: Event[Any]) -> bool:
        if event.type not in self.types:
            return False
        payload = event.payload
        if isinstance(payload, CustomTracked) and self.custom_names is not None:
            return payload.name in self.custom_names
        return True


def interest_of(plans: Sequence[Plan]) -> Interest:
    """What the facts learn from, aliases (merged by the engine), and the custom events
    the plans' triggers, exits and event steps name. Any other event leaves a contact's
    state and commands as they were (a property test holds the engine to it)."""
    types = {cls.TYPE for cls in FACT_PAYLOADS} | {ContactAliased.TYPE}
    names: set[str | None] = set()
    for plan in plans:
        names.update(t.name for t in plan.triggers if t.event == "custom")
        names.update(e.name for e in plan.exits if e.event == "custom")
        if any(step.event == "custom" for step in plan.steps):
            names.add(None)  # an event step takes any custom event
    if not names:
        return Interest(frozenset(types), frozenset())
    custom_names = None if None in names else frozenset(n for n in names if n is not None)
    return Interest(frozenset(types | {CustomTracked.TYPE}), custom_names)


def message_id_for(shop_id: str, contact_key: str, plan: str, step: str, instance_id: str) -> str:
    return str(deterministic_id(shop_id, contact_key, plan, step, instance_id))


@dataclass(slots=True)
class _Run:
    """The mutable scratchpad of one decision; only its final values leave `decide`."""

    shop: ShopFacts
    policy: Policy
    facts: ContactFacts
    shop_id: str
    contact_key: str
    commands: list[Command]

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.facts.timezone, self.shop.timezone)


class PlanMachine:
    """One declarative plan, interpreted."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.time_steps = plan.time_steps
        self.steps_by_name = {s.name: s for s in plan.steps}
        self.step_names = tuple(self.steps_by_name)

    # -- events -------------------------------------------------------------------------

    def on_event(self, state: PlanState, event: Event[Any], run: _Run, now: datetime) -> PlanState:
        payload = event.payload
        state = self._exits(state, payload, event.occurred_at, run, now)
        state = self._arm_event_steps(state, payload, event.occurred_at, run, now)
        for trigger in self.plan.triggers:
            if _matches(trigger.event, trigger.name, payload):
                state = self._trigger(state, trigger, payload, event.occurred_at, run, now)
        return state

    def _exits(
        self, state: PlanState, payload: Payload, at: datetime, run: _Run, now: datetime
    ) -> PlanState:
        for key, instance in list(state.instances.items()):
            for exit_ in self.plan.exits:
                if not _matches(exit_.event, exit_.name, payload):
                    continue
                if exit_.after_step is not None:
                    record = instance.steps[exit_.after_step]
                    if record.status not in SETTLED:
                        continue
                ctx = Context(run.facts, run.shop, now, instance, payload, at)
                if exit_.match == "cart" and ctx_event_cart(payload) not in (
                    None,
                    instance.cart_id,
                ):
                    continue
                if exit_.match == "order" and ctx_event_order(payload) != instance.order_id:
                    continue
                if all_hold(exit_.when, ctx):
                    state = self._finish(state, key, "goal_reached", run, now)
                    break
        return state

    def _arm_event_steps(
        self, state: PlanState, payload: Payload, at: datetime, run: _Run, now: datetime
    ) -> PlanState:
        for key, instance in state.instances.items():
            changed = instance
            for step in self.plan.steps:
                if step.event is None or not _matches(step.event, None, payload):
                    continue
                record = changed.steps[step.name]
                gate = changed.steps[step.after_step or ""]
                if record.status != "waiting" or gate.status != "sent":
                    continue
                if changed.window_until is not None and at > changed.window_until:
                    continue
                event_order = ctx_event_order(payload)
                if changed.order_id is not None and event_order not in (None, changed.order_id):
                    continue
                ctx = Context(run.facts, run.shop, now, changed, payload, at)
                if not all_hold(step.when, ctx):
                    continue
                due = due_at(at, step.delay, run.tz, step.send_hour)
                changed = changed.with_step(
                    step.name, record.apply("schedule", due_at=due, first_due_at=due)
                )
            if changed is not instance:
                state = state.evolve({"instances": {**state.instances, key: changed}})
        return state

    def _trigger(
        self,
        state: PlanState,
        trigger: Trigger,
        payload: Payload,
        at: datetime,
        run: _Run,
        now: datetime,
    ) -> PlanState:
        if not all_hold(trigger.when, Context(run.facts, run.shop, now, None, payload, at)):
            return state
        cart_id = ctx_event_cart(payload)
        order_id = ctx_event_order(payload)
        anchor: datetime | None = at
        if trigger.anchor == "birthday":
            fallback = run.facts.first_order.at if run.facts.first_order else run.facts.signup_at
            anchor = next_birthday_anchor(at, run.facts.birthday, fallback, run.tz)
        if anchor is None:
            return state
        match trigger.key:
            case "contact":
                key = "contact"
            case "cart":
                if cart_id is None:
                    return state
                key = f"cart:{cart_id}"
            case "order":
                if order_id is None:
                    return state
                key = f"order:{order_id}"
            case "year":
                key = str(anchor.astimezone(run.tz).year)
            case "fixed":
                key = trigger.key_label or "fixed"
        return self._start(state, key, anchor, at, cart_id, order_id, run, now)

    def _start(
        self,
        state: PlanState,
        key: str,
        anchor: datetime,
        at: datetime,
        cart_id: str | None,
        order_id: str | None,
        run: _Run,
        now: datetime,
    ) -> PlanState:
        rules = self.plan.reentry
        existing = state.instances.get(key)
        if existing is None and rules.single_active and state.instances:
            existing = next(iter(state.instances.values()))
        if existing is not None:
            if rules.on_retrigger == "ignore":
                return state
            if rules.on_retrigger == "restart_if_unsent" and (
                existing.sent_any or existing.anchor_at == anchor
            ):
                return state
            state = self._finish(state, existing.key, "restarted", run, now)
        if rules.once_per_key and any(h.key == key for h in state.history):
            return state
        if rules.min_interval is not None:
            floor = at - rules.min_interval.approx()
            starts = [h.started_at for h in state.history] + [
                i.started_at for i in state.instances.values()
            ]
            if any(s > floor for s in starts):
                return state
        instance_id = str(
            deterministic_id(run.shop_id, run.contact_key, self.plan.name, key, anchor.isoformat())
        )
        coupon = None
        if self.plan.coupon is not None:
            coupon = personal_code(self.plan.coupon.prefix, instance_id)
        steps = dict.fromkeys(self.step_names, _WAITING)
        instance = Instance(
            plan=self.plan.name,
            key=key,
            instance_id=instance_id,
            started_at=at,
            anchor_at=anchor,
            steps=steps,
            cart_id=cart_id,
            order_id=order_id,
            coupon=coupon,
        )
        first = self.time_steps[0] if self.time_steps else None
        if first is not None:
            instance = self._schedule(instance, first, anchor, run)
        if self.plan.coupon is not None:
            # valid from the first message that can carry it, whatever that step's delay
            offered = instance.steps[first.name].due_at if first is not None else None
            expires = (offered or anchor) + timedelta(days=self.plan.coupon.valid_days)
            instance = instance.evolve({"coupon_expires_at": expires})
        return state.evolve({"instances": {**state.instances, key: instance}})

    def _schedule(self, instance: Instance, step: Step, base: datetime, run: _Run) -> Instance:
        hour = step.send_hour if step.send_hour is not None else self.plan.send_hour
        due = due_at(base, step.delay, run.tz, hour)
        record = instance.steps[step.name].apply("schedule", due_at=due, first_due_at=due)
        return instance.with_step(step.name, record)

    def _finish(
        self, state: PlanState, key: str, reason: FinishReason, run: _Run, now: datetime
    ) -> PlanState:
        instance = state.instances[key]
        instance_transition(instance.status, "finish")
        instances = {k: v for k, v in state.instances.items() if k != key}
        history = state.history
        if reason != "restarted" or instance.sent_any:
            floor = now - HISTORY_KEPT
            history = (
                *(h for h in history if h.started_at >= floor),
                HistoryEntry(key=key, started_at=instance.started_at),
            )
        run.commands.append(Finish(self.plan.name, instance.instance_id, key, reason, now))
        state = state.evolve({"instances": instances, "history": history})
        if self.plan.recurrence == "yearly" and reason != "restarted":
            after = max(now, instance.anchor_at + timedelta(days=1))
            fallback = run.facts.first_order.at if run.facts.first_order else run.facts.signup_at
            anchor = next_birthday_anchor(after, run.facts.birthday, fallback, run.tz)
            if anchor is not None:
                next_key = str(anchor.astimezone(run.tz).year)
                state = self._start(state, next_key, anchor, now, None, None, run, now)
        return state

    # -- time ---------------------------------------------------------------------------

    def due(self, state: PlanState, now: datetime) -> list[tuple[datetime, str]]:
        out: list[tuple[datetime, str]] = []
        for key, instance in state.instances.items():
            at = instance.next_at
            if at is not None and at <= now:
                out.append((at, key))
        return out

    def advance(self, state: PlanState, key: str, run: _Run, now: datetime) -> PlanState:
        """Handle the earliest due thing of one instance: a step, or its closing window."""
        instance = state.instances[key]
        scheduled = [
            (r.due_at, i, name)
            for i, (name, r) in enumerate(instance.steps.items())
            if r.status == "scheduled" and r.due_at is not None and r.due_at <= now
        ]
        if scheduled:
            _, _, name = min(scheduled)
            instance = self._run_step(instance, self.steps_by_name[name], run, now)
        elif instance.window_until is not None and instance.window_until <= now:
            for step in self.plan.steps:
                if instance.steps[step.name].status == "waiting":
                    instance = instance.with_step(
                        step.name, instance.steps[step.name].apply("skip", settled_at=now)
                    )
                    self._decide(run, instance, step, "skipped", "window_closed", now)
        state = state.evolve({"instances": {**state.instances, key: instance}})
        if self._is_over(instance, now):
            state = self._finish(state, key, "completed", run, now)
        return state

    def _is_over(self, instance: Instance, now: datetime) -> bool:
        statuses = [r.status for r in instance.steps.values()]
        if "scheduled" in statuses:
            return False
        if "waiting" not in statuses:
            return True
        # waiting steps remain: time steps wait on nothing once the last settled, so only
        # event steps with an open window keep the instance alive
        for step in self.plan.steps:
            record = instance.steps[step.name]
            if record.status != "waiting":
                continue
            if step.event is None:
                return False
            gate = instance.steps[step.after_step or ""]
            if gate.status == "sent" and (
                instance.window_until is None or instance.window_until > now
            ):
                return False
        return True

    def _decide(
        self,
        run: _Run,
        instance: Instance,
        step: Step,
        kind: Any,
        reason: DecisionReason,
        now: datetime,
        until: datetime | None = None,
    ) -> None:
        run.commands.append(
            DecisionRecorded(
                self.plan.name, step.name, instance.instance_id, kind, reason, now, until
            )
        )

    def _run_step(self, instance: Instance, step: Step, run: _Run, now: datetime) -> Instance:
        record = instance.steps[step.name]
        ctx = Context(run.facts, run.shop, now, instance)
        if not all_hold(step.when, ctx):
            self._decide(run, instance, step, "skipped", "condition", now)
            return self._settled(instance, step, record.apply("skip", settled_at=now), run, now)
        channel = step.channel
        purpose = step.purpose or self.plan.purpose
        basis = legal_basis(run.facts, channel, purpose)
        if basis in ("no_basis", "objection"):
            self._decide(run, instance, step, "dropped", basis, now)
            return self._settled(instance, step, record.apply("drop", settled_at=now), run, now)
        window = run.policy.window_for(channel, run.facts.country)
        if window is not None:
            opens = window.next_allowed(now, run.tz)
            if opens > now:
                self._decide(run, instance, step, "held", "quiet_hours", now, opens)
                return instance.with_step(step.name, record.apply("hold", due_at=opens))
        if purpose == "marketing":
            release = cap_release(run.facts, channel, run.policy.cap_for(channel), now)
            if release is not None:
                first_due = record.first_due_at or now
                if release - first_due > step.max_hold.approx():
                    self._decide(run, instance, step, "dropped", "frequency_cap", now)
                    dropped = record.apply("drop", settled_at=now)
                    return self._settled(instance, step, dropped, run, now)
                self._decide(run, instance, step, "held", "frequency_cap", now, release)
                return instance.with_step(step.name, record.apply("hold", due_at=release))
        variant = next((v.name for v in step.variants if all_hold(v.when, ctx)), None)
        message_id = message_id_for(
            run.shop_id, run.contact_key, self.plan.name, step.name, instance.instance_id
        )
        run.commands.append(
            RequestMessage(
                message_id=message_id,
                shop_id=run.shop_id,
                contact_key=run.contact_key,
                plan=self.plan.name,
                step=step.name,
                plan_instance=instance.instance_id,
                variant=variant,
                channel=channel,
                purpose=purpose,
                locale=run.facts.locale,
                at=now,
                not_after=now + step.max_hold.approx(),
                context=self._context(step, instance, run),
            )
        )
        run.facts = record_send(
            run.facts,
            SendRecord(
                message_id=message_id,
                plan=self.plan.name,
                step=step.name,
                plan_instance=instance.instance_id,
                channel=channel,
                purpose=purpose,
                at=now,
            ),
            now,
        )
        sent = record.apply("send", settled_at=now, message_id=message_id, variant=variant)
        return self._settled(instance, step, sent, run, now)

    def _settled(
        self, instance: Instance, step: Step, record: StepRecord, run: _Run, now: datetime
    ) -> Instance:
        instance = instance.with_step(step.name, record)
        for dependent in self.plan.steps:
            if dependent.after_step == step.name and dependent.within is not None:
                if record.status == "sent":
                    instance = instance.evolve(
                        update={"window_until": now + dependent.within.approx()}
                    )
                elif instance.steps[dependent.name].status == "waiting":
                    skipped = instance.steps[dependent.name].apply("skip", settled_at=now)
                    instance = instance.with_step(dependent.name, skipped)
        if step.is_event_step:
            return instance
        time_steps = self.time_steps
        index = time_steps.index(step)
        if index + 1 < len(time_steps):
            nxt = time_steps[index + 1]
            base = (
                instance.anchor_at
                if nxt.anchor == "anchor"
                else instance.steps[nxt.anchor].settled_at or now
            )
            instance = self._schedule(instance, nxt, base, run)
        return instance

    def _coupon_context(self, step: Step, instance: Instance) -> dict[str, Any] | None:
        """The step's own offer if it has one, else the instance's code (the plan's)."""
        if step.coupon is not None:
            offered = instance.steps[step.name].first_due_at or instance.anchor_at
            expires = offered + timedelta(days=step.coupon.valid_days)
            code = personal_code(step.coupon.prefix, f"{instance.instance_id}/{step.name}")
            discount = step.coupon.discount
        elif self.plan.coupon is not None and instance.coupon is not None:
            code, discount = instance.coupon, self.plan.coupon.discount
            expires = instance.coupon_expires_at or instance.anchor_at
        else:
            return None
        return {"code": code, "discount": discount, "expires_at": expires.isoformat()}

    def _context(self, step: Step, instance: Instance, run: _Run) -> dict[str, Any]:
        """What the sender renders from (keys documented in the README)."""
        facts = run.facts
        ctx: dict[str, Any] = {
            "instance_key": instance.key,
            "contact": {
                "first_name": facts.first_name,
                "last_name": facts.last_name,
                "email": facts.email,
                "phone": facts.phone,
                "locale": facts.locale,
                "timezone": facts.timezone,
                "country": facts.country,
                "loyalty_tier": facts.loyalty_tier,
            },
        }
        if step.template is not None:
            ctx["template"] = step.template
        for part in step.include:
            match part:
                case "cart":
                    cart = facts.carts.get(instance.cart_id or "")
                    if cart is not None:
                        ctx["cart"] = {
                            "cart_id": cart.cart_id,
                            "total": str(cart.total),
                            "currency": cart.currency,
                            "changed_at": cart.changed_at.isoformat(),
                            "items": [_line_context(i) for i in cart.items],
                        }
                case "last_order" | "first_order":
                    order = facts.last_order if part == "last_order" else facts.first_order
                    if order is not None:
                        ctx[part] = _order_context(order)
                case "recommendations":
                    order = facts.last_order
                    ctx["recommendations"] = {
                        "strategy": "cross_sell" if _above_average(order, run.shop) else "up_sell",
                        "based_on_product_ids": list(order.product_ids[:20]) if order else [],
                        "based_on_categories": list(order.categories) if order else [],
                    }
                case "order":
                    ctx["order_id"] = instance.order_id
                case "coupon":
                    offer = self._coupon_context(step, instance)
                    if offer is not None:
                        ctx["coupon"] = offer
                case "survey_answer":
                    ctx["survey_answer"] = facts.survey_answers.get(instance.order_id or "")
        return ctx


def personal_code(prefix: str, seed: str) -> str:
    """A contact's code for one offer: the prefix and 8 hex digits derived from `seed`."""
    return f"{prefix}-{hashlib.sha256(seed.encode()).hexdigest()[:8].upper()}"


def _line_context(line: CartLine) -> dict[str, Any]:
    """A cart line as the event carried it: every field, the price as a string."""
    ctx: dict[str, Any] = {name: getattr(line, name) for name in line.__struct_fields__}
    ctx["price"] = str(line.price)
    return ctx


def _order_context(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "total": str(order.total),
        "currency": order.currency,
        "at": order.at.isoformat(),
        "items": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "price": str(line.price),
            }
            for line in order.lines
        ],
    }


def _above_average(order: Order | None, shop: ShopFacts) -> bool:
    return (
        order is not None and shop.average_basket is not None and order.total > shop.average_basket
    )


def ctx_event_cart(payload: Payload) -> str | None:
    if isinstance(payload, CartChanged | CheckoutStarted | OrderCompleted):
        return payload.cart_id
    return None


def ctx_event_order(payload: Payload) -> str | None:
    if isinstance(payload, OrderCompleted | SurveyAnswered | OrderRefunded):
        return payload.order_id
    return None


class Engine:
    """All of a shop's plans for one contact."""

    def __init__(self, plans: Sequence[Plan], policy: Policy | None = None) -> None:
        enabled = [p for p in plans if p.enabled]
        names = [p.name for p in enabled]
        if len(set(names)) != len(names):
            raise IllegalTransition("two plans share a name")
        self.machines = [
            PlanMachine(p) for p in sorted(enabled, key=lambda p: (p.priority, p.name))
        ]
        self.policy = policy or Policy()
        self._order = {m.plan.name: (m.plan.priority, i) for i, m in enumerate(self.machines)}
        self._by_name = {m.plan.name: m for m in self.machines}
        self.interest = interest_of([m.plan for m in self.machines])

    def decide(
        self, state: ContactState, event: Input, now: datetime, shop: ShopFacts
    ) -> tuple[ContactState, tuple[Command, ...]]:
        if now.tzinfo is None:
            raise IllegalTransition("now must be timezone-aware")
        run = _Run(shop, self.policy, state.facts, state.shop_id, state.contact_key, [])
        plans = dict(state.plans)
        if isinstance(event, Wakeup):
            if event.at > now:
                raise IllegalTransition("a wake-up cannot fire before it is due")
        else:
            if event.contact_key != state.contact_key or event.shop_id != state.shop_id:
                raise IllegalTransition("event for another contact")
            before = run.facts
            run.facts, fresh = reduce_facts(run.facts, event)
            if not fresh:
                return state.evolve({"facts": run.facts}), ()
            if isinstance(event.payload, OrderCompleted):
                self._attribute(before, event, run)
            if not _older_than_last_order(event, before):
                for machine in self.machines:
                    name = machine.plan.name
                    plans[name] = machine.on_event(
                        plans.get(name) or PlanState(plan=name), event, run, now
                    )
        plans = self._run_due(plans, run, now)
        plans = {k: v for k, v in plans.items() if v.instances or v.history}
        new_state = state.evolve({"facts": run.facts, "plans": plans})
        return new_state, (*run.commands, *timer_commands(state, new_state))

    def merge(
        self, known: ContactState, anon: ContactState, now: datetime, shop: ShopFacts
    ) -> tuple[ContactState, tuple[Command, ...], ContactState, tuple[Command, ...]]:
        """Fold an aliased anonymous contact into the known one (see `domain.merge`).

        Returns the known contact's new state and commands (its timers now include the moved
        instances'; anything already due runs at once), then the emptied anonymous contact's
        (its timers cancelled)."""
        if now.tzinfo is None:
            raise IllegalTransition("now must be timezone-aware")
        if known.shop_id != anon.shop_id or known.contact_key == anon.contact_key:
            raise IllegalTransition("a contact merges only with another of the same shop")
        plans = {m.plan.name: m.plan for m in self.machines}
        merged, emptied = merge_states(known, anon, plans)
        run = _Run(shop, self.policy, merged.facts, merged.shop_id, merged.contact_key, [])
        due = self._run_due(dict(merged.plans), run, now)
        merged = merged.evolve({"facts": run.facts, "plans": due})
        return (
            merged,
            (*run.commands, *timer_commands(known, merged)),
            emptied,
            timer_commands(anon, emptied),
        )

    def _run_due(
        self, plans: dict[str, PlanState], run: _Run, now: datetime
    ) -> dict[str, PlanState]:
        order, by_name = self._order, self._by_name

        def due_of(name: str) -> list[tuple[datetime, tuple[int, int], str, str]]:
            return [(at, order[name], name, key) for at, key in by_name[name].due(plans[name], now)]

        # a step only changes its own plan's instances, so only that plan is looked at again
        due = {name: due_of(name) for name in plans if name in by_name}
        for _ in range(MAX_STEPS_PER_DECISION):
            candidates = [c for items in due.values() for c in items]
            if not candidates:
                return plans
            _, _, name, key = min(candidates)
            plans[name] = by_name[name].advance(plans[name], key, run, now)
            due[name] = due_of(name)
        raise IllegalTransition("a plan kept stepping without time passing")

    def _attribute(self, before: ContactFacts, event: Event[Any], run: _Run) -> None:
        payload = event.payload
        assert isinstance(payload, OrderCompleted)
        window = self.policy.attribution_window
        candidates = [
            s for s in before.sends if event.occurred_at - window <= s.at <= event.occurred_at
        ]
        if candidates:
            last = max(candidates, key=lambda s: s.at)
            run.commands.append(
                OrderAttributed(
                    payload.order_id,
                    last.plan,
                    last.step,
                    last.message_id,
                    payload.total,
                    event.occurred_at,
                )
            )


def _older_than_last_order(event: Event[Any], before: ContactFacts) -> bool:
    """An order that arrives after a later one (a backfill, an import out of order) is a
    fact about the past: it counts in the facts, but plans react to the latest purchase
    only, so it neither starts, restarts nor ends any of them."""
    last = before.last_order
    return (
        isinstance(event.payload, OrderCompleted)
        and last is not None
        and event.occurred_at < last.at
    )


def timer_commands(before: ContactState, after: ContactState) -> tuple[Command, ...]:
    """`wakeup_changes` between the two states' wake-ups, looking only at the plans whose
    state changed (a firing changes one): the others need the same wake-ups as before."""
    old: dict[str, datetime] = {}
    new: dict[str, datetime] = {}
    for name in before.plans.keys() | after.plans.keys():
        was, now = before.plans.get(name), after.plans.get(name)
        if was is now:
            continue
        if was is not None:
            old.update(was.wakeups())
        if now is not None:
            new.update(now.wakeups())
    return wakeup_changes(old, new)


def wakeup_changes(old: dict[str, datetime], new: dict[str, datetime]) -> tuple[Command, ...]:
    """Schedule what is new or moved (by key), then cancel what is gone."""
    commands: list[Command] = [
        ScheduleWakeup(key, at) for key, at in sorted(new.items()) if old.get(key) != at
    ]
    gone = tuple(sorted(k for k in old if k not in new))
    if gone:
        commands.append(CancelWakeups(gone))
    return tuple(commands)
