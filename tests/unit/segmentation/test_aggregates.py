"""Folding events into a contact's aggregates, and change events exactly once per change."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from relance_events.event import Event, new_event
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactIdentified,
    ContactTraits,
    EmailOpened,
    LifecycleStageChanged,
    LineItem,
    LinkClicked,
    LoyaltyTierChanged,
    MessageSent,
    OrderCompleted,
    OrderRefunded,
    Payload,
    RfmSegmentChanged,
)
from relance_segmentation.domain.aggregates import (
    ContactAggregate,
    ContactProfile,
    apply,
    changes,
    profile_of,
)
from relance_segmentation.domain.lifecycle import LifecycleConfig
from relance_segmentation.domain.rfm import RfmValues, boundaries

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def ev(payload: Payload, at: datetime = NOW) -> Event[Payload]:
    return new_event(payload, shop_id="s1", contact_key="u1", source="test", occurred_at=at)


def fold(*events: Event[Payload]) -> ContactAggregate:
    agg = ContactAggregate(shop_id="s1", contact_key="u1")
    for e in events:
        agg = apply(agg, e, NOW)
    return agg


def test_orders_refunds_and_carts() -> None:
    item = LineItem(product_id="p1", price=Decimal(10), quantity=3)
    agg = fold(
        ev(CartChanged(cart_id="c1", items=[item], total=Decimal(30), change="product_added")),
        ev(CartChanged(cart_id="c2", items=[item], total=Decimal(30), change="product_added")),
        ev(OrderCompleted(order_id="o2", total=Decimal(30), cart_id="c1"), NOW - timedelta(days=2)),
        ev(OrderCompleted(order_id="o1", total=Decimal(50)), NOW - timedelta(days=9)),
        ev(OrderRefunded(order_id="o1", amount=Decimal("12.5"))),
    )
    assert agg.orders_count == 2
    assert agg.gross == Decimal(80)
    assert agg.refunded == Decimal("12.5")
    assert agg.net_monetary == Decimal("67.5")
    assert agg.average_order_value == Decimal(40)
    assert agg.first_order_at == NOW - timedelta(days=9)
    assert agg.last_order_at == NOW - timedelta(days=2)
    assert agg.last_order_total == Decimal(30)  # the later order, though it arrived first
    assert set(agg.open_carts) == {"c2"}
    assert agg.open_carts["c2"].items == 3
    assert agg.rfm_values(NOW) == RfmValues(2, 2, Decimal("67.5"))
    emptied = apply(
        agg,
        ev(CartChanged(cart_id="c2", items=[], total=Decimal(0), change="product_removed")),
        NOW,
    )
    assert emptied.open_carts == {}


def test_traits_consent_and_engagement() -> None:
    agg = fold(
        ev(ContactIdentified(user_id="u1", traits=ContactTraits(email="a@x.io", custom={"k": 1}))),
        ev(
            ContactIdentified(
                user_id="u1",
                traits=ContactTraits(
                    birthday=date(1990, 5, 4), signup_at=NOW - timedelta(days=1), custom={"j": 2}
                ),
            )
        ),
        ev(
            ConsentChanged(
                channel="email", purpose="marketing", status="granted", origin="identify"
            )
        ),
        ev(ConsentChanged(channel="email", purpose="marketing", status="denied", origin="admin")),
        ev(EmailOpened(message_id="m1"), NOW - timedelta(hours=1)),
        ev(EmailOpened(message_id="m0"), NOW - timedelta(hours=5)),
        ev(LinkClicked(message_id="m1"), NOW - timedelta(hours=1)),
    )
    assert agg.traits.email == "a@x.io"
    assert agg.traits.custom == {"k": 1, "j": 2}
    assert agg.birthday == date(1990, 5, 4)
    assert agg.signup_at == NOW - timedelta(days=1)
    assert agg.consent == {"email:marketing": "denied"}
    assert agg.last_email_open_at == NOW - timedelta(hours=1)
    assert agg.last_email_click_at == NOW - timedelta(hours=1)


def test_unrelated_events_leave_the_aggregate_as_is() -> None:
    agg = fold(ev(OrderCompleted(order_id="o1", total=Decimal(5))))
    assert apply(agg, ev(MessageSent(message_id="m", channel="email")), NOW) is agg


def test_profile_and_changes_exactly_once() -> None:
    population = {
        str(i): RfmValues(recency_days=i * 20, frequency=1 + i % 4, monetary=Decimal(i * 30))
        for i in range(20)
    }
    bounds = boundaries(population)
    config = LifecycleConfig()
    prospect = profile_of(fold(), bounds, config, NOW)
    assert prospect == ContactProfile(user_id="u1", stage="prospect")
    first = changes(None, prospect, NOW)
    assert [type(c) for c in first] == [LifecycleStageChanged]

    buyer = fold(ev(OrderCompleted(order_id="o1", total=Decimal(600)), NOW - timedelta(days=1)))
    after = profile_of(buyer, bounds, config, NOW)
    assert (after.stage, after.tier, after.r, after.f, after.m) == (
        "ambassador",
        "discovery",
        5,
        1,
        5,
    )
    assert after.segment == "potential_loyalist"
    got = changes(prospect, after, NOW)
    assert [type(c) for c in got] == [LifecycleStageChanged, LoyaltyTierChanged, RfmSegmentChanged]
    stage_change = got[0]
    assert isinstance(stage_change, LifecycleStageChanged)
    assert (stage_change.previous, stage_change.current) == ("prospect", "ambassador")
    assert changes(after, after, NOW) == []

    later = NOW + timedelta(days=190)
    lapsed = profile_of(buyer, bounds, config, later)
    assert lapsed.stage == "lapsing"
    again = changes(after, lapsed, later)
    assert any(isinstance(c, LifecycleStageChanged) and c.current == "lapsing" for c in again)
    next_day = later + timedelta(days=1)
    still = changes(lapsed, profile_of(buyer, bounds, config, next_day), next_day)
    assert not any(isinstance(c, LifecycleStageChanged) for c in still)


def test_no_boundaries_yet_means_no_scores() -> None:
    buyer = fold(ev(OrderCompleted(order_id="o1", total=Decimal(10))))
    p = profile_of(buyer, None, LifecycleConfig(), NOW)
    assert (p.stage, p.tier, p.segment, p.r) == ("new_customer", "discovery", None, None)
    assert [type(c) for c in changes(None, p, NOW)] == [LifecycleStageChanged, LoyaltyTierChanged]
