"""Lifecycle stage and loyalty tier of a contact, from its aggregates and `now`."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from relance_events.payloads import LifecycleStage, LoyaltyTier


@dataclass(frozen=True)
class LifecycleConfig:
    """Thresholds; the defaults are the spec's.

    Stage, first rule that matches: no order -> prospect; last order at or before
    `now - ex_customer_after_months` -> ex_customer; at or before `now -
    lapsing_after_months` -> lapsing; `ambassador_min_orders`+ orders or an m score of
    `ambassador_min_m_score` (top monetary quintile) -> ambassador; 2+ orders -> loyal;
    else new_customer.

    Tier (None without an order): ambassador when active (not lapsing nor ex_customer)
    with `ambassador_tier_min_orders`+ orders and a net spend of at least
    `ambassador_tier_min_net` (strong activity); premium at `premium_min_orders`+ orders
    or a net spend of at least `premium_min_net`; recurrence at 2+ orders; else discovery.
    """

    lapsing_after_months: int = 6
    ex_customer_after_months: int = 12
    ambassador_min_orders: int = 5
    ambassador_min_m_score: int = 5
    premium_min_orders: int = 5
    premium_min_net: Decimal = Decimal(1000)
    ambassador_tier_min_orders: int = 10
    ambassador_tier_min_net: Decimal = Decimal(2000)

    def __post_init__(self) -> None:
        if not 0 < self.lapsing_after_months < self.ex_customer_after_months:
            raise ValueError("need 0 < lapsing_after_months < ex_customer_after_months")


def months_before(now: datetime, months: int) -> datetime:
    """The same wall time `months` calendar months earlier in UTC, day clamped to the month."""
    at = now.astimezone(UTC)
    index = at.year * 12 + (at.month - 1) - months
    year, month = divmod(index, 12)
    day = min(at.day, calendar.monthrange(year, month + 1)[1])
    return at.replace(year=year, month=month + 1, day=day)


@dataclass(frozen=True)
class Cutoffs:
    """A last order at or before these instants means lapsing / ex_customer."""

    lapsing: datetime
    ex_customer: datetime

    @classmethod
    def at(cls, now: datetime, config: LifecycleConfig) -> Cutoffs:
        return cls(
            lapsing=months_before(now, config.lapsing_after_months),
            ex_customer=months_before(now, config.ex_customer_after_months),
        )


def lifecycle_stage(
    *,
    orders_count: int,
    last_order_at: datetime | None,
    m_score: int | None,
    cutoffs: Cutoffs,
    config: LifecycleConfig,
) -> LifecycleStage:
    if orders_count <= 0 or last_order_at is None:
        return "prospect"
    if last_order_at <= cutoffs.ex_customer:
        return "ex_customer"
    if last_order_at <= cutoffs.lapsing:
        return "lapsing"
    if orders_count >= config.ambassador_min_orders or (
        m_score is not None and m_score >= config.ambassador_min_m_score
    ):
        return "ambassador"
    if orders_count >= 2:
        return "loyal"
    return "new_customer"


def loyalty_tier(
    *,
    orders_count: int,
    net_monetary: Decimal,
    last_order_at: datetime | None,
    cutoffs: Cutoffs,
    config: LifecycleConfig,
) -> LoyaltyTier | None:
    if orders_count <= 0 or last_order_at is None:
        return None
    active = last_order_at > cutoffs.lapsing
    if (
        active
        and orders_count >= config.ambassador_tier_min_orders
        and net_monetary >= config.ambassador_tier_min_net
    ):
        return "ambassador"
    if orders_count >= config.premium_min_orders or net_monetary >= config.premium_min_net:
        return "premium"
    if orders_count >= 2:
        return "recurrence"
    return "discovery"
