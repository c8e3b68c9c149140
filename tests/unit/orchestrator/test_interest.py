"""What a set of plans reads: the events a consumer may skip before loading a contact."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from relance_events import Event, deterministic_id, new_event, topics
from relance_events.payloads import (
    ContactAliased,
    CustomTracked,
    LifecycleStageChanged,
    MessageDelivered,
    OrderCompleted,
    PageViewed,
    Payload,
)
from relance_orchestrator.domain.engine import Engine, interest_of
from relance_orchestrator.plans.loader import load_plans, parse_plan
from relance_runtime.platform import narrowed
from relance_runtime.registry import Subscription

AT = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


def _event(payload: Payload) -> Event[Any]:
    return new_event(
        payload,
        shop_id="shop",
        contact_key="c1",
        source="test",
        occurred_at=AT,
        event_id=deterministic_id("interest", repr(payload)),
    )


def test_the_bundled_plans_read_no_custom_event_nor_views_nor_segment_changes() -> None:
    interest = Engine(load_plans()).interest
    assert interest.custom_names == frozenset()
    assert CustomTracked.TYPE not in interest.types
    for payload in (
        CustomTracked(name="Product Viewed"),
        PageViewed(name="Home"),
        LifecycleStageChanged(user_id="c1", current="loyal", as_of=AT),
        MessageDelivered(message_id="m1", channel="email"),
    ):
        assert not interest.wants(_event(payload))
    for payload in (
        OrderCompleted(order_id="o1", total=Decimal(5)),
        ContactAliased(user_id="c1", previous_id="anon-1"),
    ):
        assert interest.wants(_event(payload))


def test_a_named_custom_trigger_reads_that_name_only() -> None:
    interest = Engine(load_plans(examples=["back_in_stock"])).interest
    assert CustomTracked.TYPE in interest.types
    assert interest.custom_names == frozenset({"Back In Stock"})
    assert interest.wants(_event(CustomTracked(name="Back In Stock")))
    assert not interest.wants(_event(CustomTracked(name="Product Viewed")))


@pytest.mark.parametrize(
    "plan",
    [
        # an exit on any custom event
        """
name: custom_listener
triggers: [{event: order_completed}]
exits: [{event: custom}]
steps: [{name: first}]
""",
        # an event step armed by any custom event
        """
name: custom_listener
triggers: [{event: order_completed}]
steps:
  - {name: first}
  - {name: on_any, event: custom, after_step: first, within: {days: 2}}
""",
    ],
)
def test_an_unnamed_custom_listener_reads_every_custom_event(plan: str) -> None:
    interest = interest_of([parse_plan(plan)])
    assert interest.custom_names is None
    assert interest.wants(_event(CustomTracked(name="Anything")))


def test_a_service_narrows_its_subscription_by_what_it_reads() -> None:
    everything = Subscription("g", (topics.EVENTS,))
    some = Subscription("g", (topics.EVENTS,), frozenset({"a", "b"}))
    assert narrowed(everything, None) is None
    assert narrowed(everything, frozenset({"a"})) == frozenset({"a"})
    assert narrowed(some, None) == frozenset({"a", "b"})
    assert narrowed(some, frozenset({"b", "c"})) == frozenset({"b"})
