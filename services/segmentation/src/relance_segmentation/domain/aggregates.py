"""What segmentation knows about one contact, folded from events, and its scored profile."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal

from relance_events.event import Event
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ConsentStatus,
    ContactAliased,
    ContactIdentified,
    ContactTraits,
    EmailOpened,
    LifecycleStage,
    LifecycleStageChanged,
    LinkClicked,
    LoyaltyTier,
    LoyaltyTierChanged,
    OrderCompleted,
    OrderRefunded,
    Payload,
    RfmSegment,
    RfmSegmentChanged,
)
from relance_segmentation.domain.lifecycle import (
    Cutoffs,
    LifecycleConfig,
    lifecycle_stage,
    loyalty_tier,
)
from relance_segmentation.domain.rfm import RfmBoundaries, RfmValues, recency_days, score_values
from relance_segmentation.domain.segments import segment_of

RELEVANT_TYPES: frozenset[str] = frozenset(
    cls.TYPE
    for cls in (
        ContactIdentified,
        ContactAliased,
        ConsentChanged,
        OrderCompleted,
        OrderRefunded,
        CartChanged,
        EmailOpened,
        LinkClicked,
    )
)


def consent_key(channel: str, purpose: str) -> str:
    return f"{channel}:{purpose}"


@dataclass(frozen=True)
class OpenCart:
    cart_id: str
    total: Decimal
    currency: str
    items: int
    updated_at: datetime


@dataclass(frozen=True)
class ContactAggregate:
    """Per-contact aggregates. `apply` assumes each order id arrives once (callers dedupe)."""

    shop_id: str
    contact_key: str
    traits: ContactTraits = field(default_factory=ContactTraits)
    consent: dict[str, ConsentStatus] = field(default_factory=dict)
    orders_count: int = 0
    gross: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    last_order_total: Decimal | None = None
    open_carts: dict[str, OpenCart] = field(default_factory=dict)
    last_email_open_at: datetime | None = None
    last_email_click_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def net_monetary(self) -> Decimal:
        return self.gross - self.refunded

    @property
    def average_order_value(self) -> Decimal | None:
        return None if self.orders_count == 0 else self.gross / self.orders_count

    @property
    def birthday(self) -> date | None:
        return self.traits.birthday

    @property
    def signup_at(self) -> datetime | None:
        return self.traits.signup_at

    def rfm_values(self, now: datetime) -> RfmValues | None:
        if self.orders_count == 0 or self.last_order_at is None:
            return None
        return RfmValues(
            recency_days=recency_days(self.last_order_at, now),
            frequency=self.orders_count,
            monetary=self.net_monetary,
        )


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _merge_traits(old: ContactTraits, new: ContactTraits) -> ContactTraits:
    given = new.model_dump(exclude_unset=True, exclude_none=True)
    custom = {**old.custom, **given.pop("custom", {})}
    return old.model_copy(update={**given, "custom": custom})


def apply(agg: ContactAggregate, event: Event[Payload], now: datetime) -> ContactAggregate:
    """The aggregate after one event; events of other types leave it unchanged."""
    p = event.payload
    at = event.occurred_at
    if isinstance(p, ContactIdentified):
        return replace(agg, traits=_merge_traits(agg.traits, p.traits), updated_at=now)
    if isinstance(p, ConsentChanged):
        consent = {**agg.consent, consent_key(p.channel, p.purpose): p.status}
        return replace(agg, consent=consent, updated_at=now)
    if isinstance(p, OrderCompleted):
        latest = agg.last_order_at is None or at >= agg.last_order_at
        carts = {k: v for k, v in agg.open_carts.items() if k != p.cart_id}
        return replace(
            agg,
            orders_count=agg.orders_count + 1,
            gross=agg.gross + p.total,
            first_order_at=at if agg.first_order_at is None else min(agg.first_order_at, at),
            last_order_at=_later(agg.last_order_at, at),
            last_order_total=p.total if latest else agg.last_order_total,
            open_carts=carts,
            updated_at=now,
        )
    if isinstance(p, OrderRefunded):
        return replace(agg, refunded=agg.refunded + p.amount, updated_at=now)
    if isinstance(p, CartChanged):
        carts = {k: v for k, v in agg.open_carts.items() if k != p.cart_id}
        if p.items:
            carts[p.cart_id] = OpenCart(
                cart_id=p.cart_id,
                total=p.total,
                currency=p.currency,
                items=sum(i.quantity for i in p.items),
                updated_at=at,
            )
        return replace(agg, open_carts=carts, updated_at=now)
    if isinstance(p, EmailOpened):
        return replace(agg, last_email_open_at=_later(agg.last_email_open_at, at), updated_at=now)
    if isinstance(p, LinkClicked):
        return replace(agg, last_email_click_at=_later(agg.last_email_click_at, at), updated_at=now)
    return agg


def _earlier_of(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _later_of(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def merge(known: ContactAggregate, previous: ContactAggregate, now: datetime) -> ContactAggregate:
    """`known` after absorbing `previous` (an alias: the anonymous visitor is now known).

    Counts and amounts add up (each order id lives in one contact's ledger); for traits,
    consent and carts what `known` says wins over what `previous` said.
    """
    if previous.last_order_at is not None and (
        known.last_order_at is None or previous.last_order_at > known.last_order_at
    ):
        last_total = previous.last_order_total
    else:
        last_total = known.last_order_total
    return replace(
        known,
        traits=_merge_traits(previous.traits, known.traits),
        consent={**previous.consent, **known.consent},
        orders_count=known.orders_count + previous.orders_count,
        gross=known.gross + previous.gross,
        refunded=known.refunded + previous.refunded,
        first_order_at=_earlier_of(known.first_order_at, previous.first_order_at),
        last_order_at=_later_of(known.last_order_at, previous.last_order_at),
        last_order_total=last_total,
        open_carts={**previous.open_carts, **known.open_carts},
        last_email_open_at=_later_of(known.last_email_open_at, previous.last_email_open_at),
        last_email_click_at=_later_of(known.last_email_click_at, previous.last_email_click_at),
        updated_at=now,
    )


def alias_sources(event: Event[Payload]) -> tuple[str, ...]:
    """Contact keys whose history an event moves into `event.contact_key` (alias, or an
    identify carrying both ids)."""
    p = event.payload
    raw: tuple[str, ...]
    if isinstance(p, ContactAliased):
        raw = (f"anon:{p.previous_id}", p.previous_id)
    elif isinstance(p, ContactIdentified) and p.user_id is not None and p.anonymous_id:
        raw = (f"anon:{p.anonymous_id}",)
    else:
        return ()
    return tuple(k for k in dict.fromkeys(raw) if k != event.contact_key)


@dataclass(frozen=True)
class ContactProfile:
    """What other services react to: RFM scores and segment, stage, tier."""

    user_id: str
    stage: LifecycleStage
    tier: LoyaltyTier | None = None
    r: int | None = None
    f: int | None = None
    m: int | None = None
    segment: RfmSegment | None = None


def profile_of(
    agg: ContactAggregate,
    bounds: RfmBoundaries | None,
    config: LifecycleConfig,
    now: datetime,
) -> ContactProfile:
    """Score one contact against stored boundaries (None before the first recompute)."""
    cutoffs = Cutoffs.at(now, config)
    values = agg.rfm_values(now)
    scores = None if values is None or bounds is None else score_values(bounds, values)
    return ContactProfile(
        user_id=agg.contact_key,
        stage=lifecycle_stage(
            orders_count=agg.orders_count,
            last_order_at=agg.last_order_at,
            m_score=None if scores is None else scores.m,
            cutoffs=cutoffs,
            config=config,
        ),
        tier=loyalty_tier(
            orders_count=agg.orders_count,
            net_monetary=agg.net_monetary,
            last_order_at=agg.last_order_at,
            cutoffs=cutoffs,
            config=config,
        ),
        r=None if scores is None else scores.r,
        f=None if scores is None else scores.f,
        m=None if scores is None else scores.m,
        segment=None if scores is None else segment_of(scores.r, scores.f, scores.m),
    )


def changes(before: ContactProfile | None, after: ContactProfile, now: datetime) -> list[Payload]:
    """One event per dimension that actually changed; none when nothing did."""
    out: list[Payload] = []
    prev_stage = None if before is None else before.stage
    if after.stage != prev_stage:
        out.append(
            LifecycleStageChanged(
                user_id=after.user_id, previous=prev_stage, current=after.stage, as_of=now
            )
        )
    prev_tier = None if before is None else before.tier
    if after.tier is not None and after.tier != prev_tier:
        out.append(
            LoyaltyTierChanged(
                user_id=after.user_id, previous=prev_tier, current=after.tier, as_of=now
            )
        )
    prev_segment = None if before is None else before.segment
    if (
        after.segment is not None
        and after.segment != prev_segment
        and after.r is not None
        and after.f is not None
        and after.m is not None
    ):
        out.append(
            RfmSegmentChanged(
                user_id=after.user_id,
                previous=prev_segment,
                current=after.segment,
                r=after.r,
                f=after.f,
                m=after.m,
                as_of=now,
            )
        )
    return out
