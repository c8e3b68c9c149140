"""Evaluating the condition vocabulary of `plan.py` against facts, an instance and an event."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, assert_never

from relance_events.payloads import (
    CartChanged,
    CheckoutStarted,
    OrderCompleted,
    Payload,
    SurveyAnswered,
)
from relance_orchestrator.domain.facts import ContactFacts, Order, ShopFacts
from relance_orchestrator.domain.plan import (
    AnyOf,
    CartIs,
    Clicked,
    Compare,
    Condition,
    ConsentIs,
    CouponUnused,
    EventIs,
    FactName,
    NoOrderSince,
    Not,
    Op,
    Opened,
    OrderHasItem,
    SentWithin,
    SurveyAnswerIn,
    UnopenedStreak,
)
from relance_orchestrator.domain.state import Instance

_OPS: dict[Op, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


@dataclass(frozen=True, slots=True)
class Context:
    facts: ContactFacts
    shop: ShopFacts
    now: datetime
    instance: Instance | None = None
    payload: Payload | None = None
    event_at: datetime | None = None

    @property
    def cart_id(self) -> str | None:
        if self.instance is not None and self.instance.cart_id is not None:
            return self.instance.cart_id
        if isinstance(self.payload, CartChanged | CheckoutStarted | OrderCompleted):
            return self.payload.cart_id
        return None

    @property
    def order_id(self) -> str | None:
        if self.instance is not None and self.instance.order_id is not None:
            return self.instance.order_id
        if isinstance(self.payload, OrderCompleted | SurveyAnswered):
            return self.payload.order_id
        return None


def _fact(ctx: Context, name: FactName) -> Decimal | None:
    f = ctx.facts
    match name:
        case "orders_count":
            return Decimal(f.orders_count)
        case "first_order_total":
            return f.first_order.total if f.first_order else None
        case "last_order_total":
            return f.last_order.total if f.last_order else None
        case "total_spent":
            return f.total_spent
        case "days_since_last_order":
            return _days(ctx.now, f.last_order)
        case "days_since_first_order":
            return _days(ctx.now, f.first_order)
        case _:
            assert_never(name)


def _days(now: datetime, order: Order | None) -> Decimal | None:
    if order is None:
        return None
    return Decimal((now - order.at).total_seconds()) / Decimal(86400)


def _step_time(ctx: Context, name: str) -> datetime | None:
    if ctx.instance is None:
        return ctx.event_at
    if name == "anchor":
        return ctx.instance.anchor_at
    record = ctx.instance.steps.get(name)
    return record.settled_at if record is not None else None


def _engaged(ctx: Context, steps: Iterable[str], field: str) -> bool:
    if ctx.instance is None:
        return False
    for name in steps:
        record = ctx.instance.steps.get(name)
        if record is None or record.message_id is None:
            continue
        send = ctx.facts.send(record.message_id)
        at = getattr(send, field) if send is not None else None
        if at is not None and at <= ctx.now:
            return True
    return False


def holds(condition: Condition, ctx: Context) -> bool:
    match condition:
        case Compare():
            left = _fact(ctx, condition.fact)
            right = condition.value if condition.ref is None else ctx.shop.average_basket
            return left is not None and right is not None and _OPS[condition.op](left, right)
        case NoOrderSince():
            since = _step_time(ctx, condition.since)
            last = ctx.facts.last_order
            return last is None or since is None or last.at <= since
        case Opened():
            return _engaged(ctx, condition.steps, "opened_at")
        case Clicked():
            return _engaged(ctx, condition.steps, "clicked_at")
        case CartIs():
            cart = ctx.facts.carts.get(ctx.cart_id) if ctx.cart_id else None
            has_items = cart is not None and len(cart.items) > 0
            if condition.state == "empty":
                return not has_items
            if condition.state == "non_empty":
                return has_items
            return has_items and cart is not None and not cart.ordered
        case CouponUnused():
            code = ctx.instance.coupon if ctx.instance else None
            used = {c.upper() for c in ctx.facts.coupons_used}
            return code is None or code.upper() not in used
        case SurveyAnswerIn():
            order_id = ctx.order_id
            answer = ctx.facts.survey_answers.get(order_id) if order_id else None
            return answer is not None and answer in condition.answers
        case ConsentIs():
            status = ctx.facts.consent_for(condition.channel, condition.purpose) or "unknown"
            return status == condition.status
        case UnopenedStreak():
            mine = [
                s
                for s in ctx.facts.sends
                if s.channel == condition.channel and s.purpose == "marketing" and s.at <= ctx.now
            ]
            tail = mine[-condition.count :]
            return len(tail) == condition.count and all(
                s.opened_at is None or s.opened_at > ctx.now for s in tail
            )
        case OrderHasItem():
            return _order_has_item(ctx, condition)
        case SentWithin():
            since = ctx.now - condition.within.approx()
            return any(
                s.plan == condition.plan
                and (condition.step is None or s.step == condition.step)
                and since <= s.at <= ctx.now
                for s in ctx.facts.sends
            )
        case EventIs():
            value = getattr(ctx.payload, condition.field, None) if ctx.payload else None
            if value is None and ctx.payload is not None:
                props = getattr(ctx.payload, "properties", None)
                value = props.get(condition.field) if isinstance(props, dict) else None
            return value is not None and str(value) in condition.values
        case Not():
            return not holds(condition.condition, ctx)
        case AnyOf():
            return any(holds(c, ctx) for c in condition.conditions)
        case _:
            assert_never(condition)


def _order_has_item(ctx: Context, cond: OrderHasItem) -> bool:
    if isinstance(ctx.payload, OrderCompleted):
        items = ctx.payload.items
        return any(
            (cond.category is None or i.category == cond.category)
            and (cond.product_id is None or i.product_id == cond.product_id)
            and (cond.sku is None or i.sku == cond.sku)
            for i in items
        )
    order = ctx.facts.last_order
    if order is None:
        return False
    return (
        (cond.category is None or cond.category in order.categories)
        and (cond.product_id is None or cond.product_id in order.product_ids)
        and (cond.sku is None or cond.sku in order.skus)
    )


def all_hold(conditions: Iterable[Condition], ctx: Context) -> bool:
    return all(holds(c, ctx) for c in conditions)
