"""What the orchestrator knows about one contact, reduced from the event stream.

The orchestrator keeps these itself (it does not ask segmentation): a pure fold over
`relance_events` payloads. The shop's average basket is not a contact fact; it comes in
with `ShopFacts`.
"""

from __future__ import annotations

import contextlib
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

import msgspec

from relance_events import Event
from relance_events.payloads import (
    CartChanged,
    Channel,
    CheckoutStarted,
    ConsentChanged,
    ConsentStatus,
    ContactIdentified,
    ContactTraitsChanged,
    EmailOpened,
    LineItem,
    LinkClicked,
    LoyaltyTier,
    LoyaltyTierChanged,
    MessageSent,
    OrderCompleted,
    OrderRefunded,
    Purpose,
    SurveyAnswer,
    SurveyAnswered,
)
from relance_orchestrator.domain.evolve import Frozen

# Send records older than this are pruned; every window that reads them is shorter.
SEND_HISTORY = timedelta(days=90)
MIN_SENDS_KEPT = 20


class ShopFacts(Frozen, frozen=True, kw_only=True):
    """Shop-level inputs the plans compare against; computed elsewhere, passed in."""

    shop_id: str
    timezone: str = "UTC"
    average_basket: Decimal | None = None


class CartLine(Frozen, frozen=True, kw_only=True):
    """A cart's line, as the event's `LineItem` carried it (the same fields)."""

    product_id: str
    sku: str | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    price: Decimal = Decimal(0)
    quantity: int = 1
    url: str | None = None
    image_url: str | None = None


def cart_line(item: LineItem) -> CartLine:
    # same field names: copied by name, so a field added to both needs no code here
    return msgspec.convert(item, CartLine, from_attributes=True)


class Cart(Frozen, frozen=True, kw_only=True):
    cart_id: str
    items: tuple[CartLine, ...] = ()
    total: Decimal = Decimal(0)
    currency: str = "EUR"
    changed_at: datetime
    ordered: bool = False
    checkout_started_at: datetime | None = None


class SendRecord(Frozen, frozen=True, kw_only=True):
    """One message this orchestrator requested; opens and clicks land here."""

    message_id: str
    plan: str
    step: str
    plan_instance: str
    channel: Channel
    purpose: Purpose
    at: datetime
    opened_at: datetime | None = None
    clicked_at: datetime | None = None


# Lines of an order kept for the message context (the sender renders "your last order").
ORDER_LINES_KEPT = 10


class OrderLine(Frozen, frozen=True, kw_only=True):
    product_id: str
    name: str | None = None
    quantity: int = 1
    price: Decimal = Decimal(0)


class Order(Frozen, frozen=True, kw_only=True):
    order_id: str
    at: datetime
    total: Decimal
    currency: str = "EUR"
    coupon: str | None = None
    categories: tuple[str, ...] = ()
    product_ids: tuple[str, ...] = ()
    skus: tuple[str, ...] = ()
    lines: tuple[OrderLine, ...] = ()


class ContactFacts(Frozen, frozen=True, kw_only=True):
    contact_key: str
    orders_count: int = 0
    order_ids: frozenset[str] = frozenset()
    first_order: Order | None = None
    last_order: Order | None = None
    total_spent: Decimal = Decimal(0)
    coupons_used: frozenset[str] = frozenset()
    birthday: date | None = None
    signup_at: datetime | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    loyalty_tier: LoyaltyTier | None = None
    timezone: str | None = None
    locale: str | None = None
    country: str | None = None
    consent: dict[str, ConsentStatus] = msgspec.field(default_factory=dict)
    carts: dict[str, Cart] = msgspec.field(default_factory=dict)
    survey_answers: dict[str, SurveyAnswer] = msgspec.field(default_factory=dict)
    sends: tuple[SendRecord, ...] = ()

    def consent_for(self, channel: Channel, purpose: Purpose) -> ConsentStatus | None:
        return self.consent.get(f"{channel}:{purpose}")

    @property
    def is_customer(self) -> bool:
        return self.orders_count > 0

    def sends_since(self, channel: Channel, since: datetime) -> list[SendRecord]:
        return [
            s
            for s in self.sends
            if s.channel == channel and s.purpose == "marketing" and s.at > since
        ]

    def send(self, message_id: str) -> SendRecord | None:
        for record in self.sends:
            if record.message_id == message_id:
                return record
        return None


def record_send(facts: ContactFacts, record: SendRecord, now: datetime) -> ContactFacts:
    """Remember a requested message (deduplicated by id), pruning old ones."""
    if facts.send(record.message_id) is not None:
        return facts
    horizon = now - SEND_HISTORY
    kept = [s for s in facts.sends if s.at >= horizon]
    older = [s for s in facts.sends if s.at < horizon][-max(0, MIN_SENDS_KEPT - len(kept)) :]
    if len(kept) >= MIN_SENDS_KEPT:
        older = []
    return facts.evolve({"sends": (*older, *kept, record)})


def engaged_send(
    facts: ContactFacts, at: datetime, message_id: str | None, plan: str | None, step: str | None
) -> int | None:
    """Which remembered send an open or click at `at` is about: the one with its message id,
    else the latest of its plan and step sent by then."""
    for i in range(len(facts.sends) - 1, -1, -1):
        record = facts.sends[i]
        if message_id is not None and record.message_id == message_id:
            return i
        if message_id is None and record.plan == plan and record.step == step and record.at <= at:
            return i
    return None


def _mark(
    facts: ContactFacts,
    at: datetime,
    field: Literal["opened_at", "clicked_at"],
    message_id: str | None,
    plan: str | None,
    step: str | None,
) -> ContactFacts:
    target = engaged_send(facts, at, message_id, plan, step)
    if target is None:
        return facts
    record = facts.sends[target]
    update: dict[str, Any] = {}
    if getattr(record, field) is None:
        update[field] = at
    if field == "clicked_at" and record.opened_at is None:
        update["opened_at"] = at  # a click proves an open (pixels are often blocked)
    if not update:
        return facts
    sends = list(facts.sends)
    sends[target] = record.evolve(update)
    return facts.evolve({"sends": tuple(sends)})


def _order(payload: OrderCompleted, at: datetime) -> Order:
    items = payload.items
    return Order(
        order_id=payload.order_id,
        at=at,
        total=payload.total,
        currency=payload.currency,
        coupon=payload.coupon,
        categories=tuple(sorted({i.category for i in items if i.category})),
        product_ids=tuple(sorted({i.product_id for i in items})),
        skus=tuple(sorted({i.sku for i in items if i.sku})),
        lines=tuple(
            OrderLine(product_id=i.product_id, name=i.name, quantity=i.quantity, price=i.price)
            for i in items[:ORDER_LINES_KEPT]
        ),
    )


# The payloads `reduce_facts` learns from (or, for `message.sent`, passes on to the plans as
# news); it leaves the facts as they are for any other.
FACT_PAYLOADS: Final = (
    OrderCompleted,
    OrderRefunded,
    CartChanged,
    CheckoutStarted,
    ContactIdentified,
    ContactTraitsChanged,
    ConsentChanged,
    EmailOpened,
    LinkClicked,
    SurveyAnswered,
    LoyaltyTierChanged,
    MessageSent,
)


def reduce_facts(facts: ContactFacts, event: Event[Any]) -> tuple[ContactFacts, bool]:
    """Fold one event into the facts; the flag is False when it taught nothing new
    (a replayed order, an unknown type), so plans need not look at it again."""
    p = event.payload
    at = event.occurred_at
    match p:
        case OrderCompleted():
            if p.order_id in facts.order_ids:
                return facts, False
            order = _order(p, at)
            carts = dict(facts.carts)
            if p.cart_id is not None and p.cart_id in carts:
                carts[p.cart_id] = carts[p.cart_id].evolve({"ordered": True})
            first = facts.first_order
            if first is None or at < first.at:
                first = order
            last = facts.last_order
            if last is None or at >= last.at:
                last = order
            coupons = facts.coupons_used | ({p.coupon} if p.coupon else set())
            return facts.evolve(
                update={
                    "orders_count": facts.orders_count + 1,
                    "order_ids": facts.order_ids | {p.order_id},
                    "first_order": first,
                    "last_order": last,
                    "total_spent": facts.total_spent + p.total,
                    "coupons_used": frozenset(coupons),
                    "carts": carts,
                }
            ), True
        case OrderRefunded():
            return facts.evolve({"total_spent": facts.total_spent - p.amount}), True
        case CartChanged():
            cart = facts.carts.get(p.cart_id)
            items = tuple(cart_line(i) for i in p.items)
            if cart is not None and cart.items == items and not cart.ordered:
                return facts, False  # a view or a replay: the cart did not change
            new_cart = Cart(
                cart_id=p.cart_id, items=items, total=p.total, currency=p.currency, changed_at=at
            )
            return facts.evolve({"carts": {**facts.carts, p.cart_id: new_cart}}), True
        case CheckoutStarted():
            if p.cart_id is None or p.cart_id not in facts.carts:
                return facts, False
            cart = facts.carts[p.cart_id].evolve({"checkout_started_at": at})
            return facts.evolve({"carts": {**facts.carts, p.cart_id: cart}}), True
        case ContactIdentified():
            t = p.traits
            update: dict[str, Any] = {}
            for name in _IDENTITY_TRAITS:
                value = getattr(t, name)
                if value is not None:
                    update[name] = value
            return facts.evolve(update), True
        case ContactTraitsChanged():
            return _traits_changed(facts, p), True
        case ConsentChanged():
            consent = {**facts.consent, f"{p.channel}:{p.purpose}": p.status}
            return facts.evolve({"consent": consent}), True
        case EmailOpened():
            return _mark(facts, at, "opened_at", p.message_id, p.plan, p.step), True
        case LinkClicked():
            return _mark(facts, at, "clicked_at", p.message_id, p.plan, p.step), True
        case SurveyAnswered():
            if p.answer is None:
                return facts, True
            answers = {**facts.survey_answers, p.order_id: p.answer}
            return facts.evolve({"survey_answers": answers}), True
        case LoyaltyTierChanged():
            if facts.loyalty_tier == p.current:
                return facts, False
            return facts.evolve({"loyalty_tier": p.current}), True
        case MessageSent():
            return facts, True
        case _:
            return facts, True


_IDENTITY_TRAITS = (
    "birthday",
    "timezone",
    "locale",
    "country",
    "signup_at",
    "first_name",
    "last_name",
    "email",
    "phone",
)


def _traits_changed(facts: ContactFacts, p: ContactTraitsChanged) -> ContactFacts:
    update: dict[str, Any] = {}
    for name in ("timezone", "locale", "country", "first_name", "last_name", "email", "phone"):
        value = p.changed.get(name)
        if isinstance(value, str):
            update[name] = value
    birthday = p.changed.get("birthday")
    if isinstance(birthday, str):
        with contextlib.suppress(ValueError):
            update["birthday"] = date.fromisoformat(birthday)
    return facts.evolve(update)
