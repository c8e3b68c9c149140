"""A virtual-clock harness over the real engine (the backtest core), for table-driven tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from relance_events import deterministic_id, new_event
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactIdentified,
    ContactTraits,
    EmailOpened,
    LineItem,
    OrderCompleted,
    Payload,
    SurveyAnswered,
)
from relance_orchestrator.domain.commands import Command, RequestMessage
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.plan import Plan
from relance_orchestrator.domain.policy import Policy
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.simulate import Simulation

# A Monday, noon UTC.
T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


class Harness:
    def __init__(
        self,
        plans: Sequence[Plan] | None = None,
        policy: Policy | None = None,
        average: Decimal | None = Decimal(50),
        tz: str = "UTC",
    ) -> None:
        self.sim = Simulation(
            Engine(plans if plans is not None else load_plans(), policy),
            ShopFacts(shop_id="shop", timezone=tz, average_basket=average),
        )
        self.seq = 0

    def emit(self, payload: Payload, at: datetime, contact: str = "c1") -> tuple[Command, ...]:
        self.seq += 1
        event = new_event(
            payload,
            shop_id="shop",
            contact_key=contact,
            source="test",
            occurred_at=at,
            event_id=deterministic_id("test", str(self.seq)),
        )
        return self.sim.feed(event)

    def order(
        self,
        at: datetime,
        order_id: str,
        total: str = "40",
        *,
        cart_id: str | None = None,
        coupon: str | None = None,
        contact: str = "c1",
        category: str | None = None,
    ) -> tuple[Command, ...]:
        items = [LineItem(product_id="p1", category=category, price=Decimal(total))]
        payload = OrderCompleted(
            order_id=order_id, total=Decimal(total), cart_id=cart_id, coupon=coupon, items=items
        )
        return self.emit(payload, at, contact)

    def consent(
        self,
        at: datetime,
        channel: Any = "email",
        status: Any = "granted",
        contact: str = "c1",
        purpose: Any = "marketing",
    ) -> None:
        self.emit(
            ConsentChanged(channel=channel, purpose=purpose, status=status, origin="identify"),
            at,
            contact,
        )

    def identify(
        self,
        at: datetime,
        *,
        birthday: date | None = None,
        timezone: str | None = None,
        country: str | None = None,
        contact: str = "c1",
    ) -> None:
        traits = ContactTraits(birthday=birthday, timezone=timezone, country=country)
        self.emit(ContactIdentified(user_id=contact, traits=traits), at, contact)

    def cart(self, at: datetime, cart_id: str, n_items: int, contact: str = "c1") -> None:
        items = [LineItem(product_id=f"p{i}", price=Decimal(10)) for i in range(n_items)]
        self.emit(
            CartChanged(
                cart_id=cart_id, items=items, total=Decimal(10 * n_items), change="product_added"
            ),
            at,
            contact,
        )

    def opened(self, at: datetime, plan: str, step: str, contact: str = "c1") -> None:
        self.emit(EmailOpened(plan=plan, step=step), at, contact)

    def answer(self, at: datetime, order_id: str, answer: Any, contact: str = "c1") -> None:
        self.emit(
            SurveyAnswered(
                answer_id=f"a-{order_id}-{at.isoformat()}", order_id=order_id, answer=answer
            ),
            at,
            contact,
        )

    def until(self, at: datetime) -> None:
        self.sim.run_until(at)

    def sends(self, plan: str | None = None) -> list[RequestMessage]:
        return [s for s in self.sim.sends if plan is None or s.plan == plan]

    def steps(self, plan: str) -> list[tuple[str, str | None, datetime]]:
        return [(s.step, s.variant, s.at) for s in self.sends(plan)]


@pytest.fixture
def harness() -> Callable[..., Harness]:
    return Harness
