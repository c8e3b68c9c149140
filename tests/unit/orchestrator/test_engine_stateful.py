"""Hypothesis state machine over the real engine and plans, on a virtual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from relance_events import deterministic_id, new_event
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactIdentified,
    ContactTraits,
    CustomTracked,
    EmailOpened,
    LifecycleStageChanged,
    LineItem,
    MessageBounced,
    MessageDelivered,
    MessageFailed,
    OrderCompleted,
    PageViewed,
    Payload,
    RfmSegmentChanged,
    SurveyAnswered,
)
from relance_orchestrator.adapters.state_codec import pack_state, unpack_state
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.state import ContactState
from relance_orchestrator.domain.timing import SMS_DEFAULT_WINDOW, zone
from relance_orchestrator.plans.loader import load_plans, parse_plan
from relance_orchestrator.simulate import Simulation

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
CONTACTS = ("c1", "c2")
SMS_CART = parse_plan(
    """
name: sms_cart
priority: 6
triggers: [{event: cart_changed, key: cart, when: [{kind: cart, state: open}]}]
reentry: {on_retrigger: restart, single_active: false}
exits: [{event: order_completed, match: cart}]
steps:
  - {name: nudge, channel: sms, delay: {hours: 5}, when: [{kind: cart, state: open}]}
"""
)
PLANS = (*load_plans(examples=["back_in_stock"]), SMS_CART)
CUSTOM_NAMES = ("Back In Stock", "Product Viewed", "Wishlist Added")


def _unread_payload(kind: str, contact: str, now: datetime) -> Payload:
    match kind:
        case "page":
            return PageViewed(name="Home", url="https://shop.example/")
        case "lifecycle":
            return LifecycleStageChanged(user_id=contact, current="loyal", as_of=now)
        case "rfm":
            return RfmSegmentChanged(user_id=contact, current="champions", r=5, f=5, m=5, as_of=now)
        case "delivered":
            return MessageDelivered(message_id="m1", channel="email")
        case "failed":
            return MessageFailed(message_id="m1", channel="email", reason="x", permanent=True)
        case "bounced":
            return MessageBounced(message_id="m1", channel="email", kind="hard")
    raise AssertionError(kind)


def _sim() -> Simulation:
    return Simulation(Engine(PLANS), ShopFacts(shop_id="shop", average_basket=Decimal(50)))


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sim = _sim()
        self.now = T0
        self.log: list[Any] = []
        self.checked = 0
        self.orders = 0
        self.consent: dict[tuple[str, str, str], str] = {}  # (contact, channel, purpose)
        self.customers: set[str] = set()
        self.zones: dict[str, str] = {}

    def _check_new_sends(self) -> None:
        for send in self.sim.sends[self.checked :]:
            status = self.consent.get((send.contact_key, send.channel, send.purpose))
            if send.purpose == "transactional":
                assert status != "denied", send  # nothing after an objection, either
            if send.purpose == "marketing":
                assert status != "denied", send
                if send.channel == "sms":
                    assert status == "granted", send
                else:
                    assert status == "granted" or send.contact_key in self.customers, send
            if send.channel == "sms":  # quiet hours in the contact's own timezone
                local = send.at.astimezone(zone(self.zones.get(send.contact_key, "UTC")))
                assert SMS_DEFAULT_WINDOW.allows(local), send
        self.checked = len(self.sim.sends)

    def _emit(self, payload: Payload, contact: str) -> None:
        self.sim.run_until(self.now)
        self._check_new_sends()
        event = self._event(payload, contact)
        self.log.append(event)
        self.sim.feed(event)
        if isinstance(payload, OrderCompleted):
            self.customers.add(contact)
        if isinstance(payload, ConsentChanged):
            self.consent[(contact, payload.channel, payload.purpose)] = payload.status
        if isinstance(payload, ContactIdentified) and payload.traits.timezone is not None:
            self.zones[contact] = payload.traits.timezone
        self._check_new_sends()

    @rule(hours=st.integers(min_value=0, max_value=24 * 40))
    def advance(self, hours: int) -> None:
        self.now += timedelta(hours=hours)
        self.log.append(("until", self.now))
        self.sim.run_until(self.now)
        self._check_new_sends()

    @rule(contact=st.sampled_from(CONTACTS), total=st.integers(1, 120), cart=st.booleans())
    def order(self, contact: str, total: int, cart: bool) -> None:
        self.orders += 1
        payload = OrderCompleted(
            order_id=f"o{self.orders}", total=Decimal(total), cart_id="k1" if cart else None
        )
        self._emit(payload, contact)

    @rule(contact=st.sampled_from(CONTACTS), n=st.integers(0, 3))
    def cart(self, contact: str, n: int) -> None:
        items = [LineItem(product_id=f"p{i}") for i in range(n)]
        self._emit(
            CartChanged(cart_id="k1", items=items, total=Decimal(n), change="product_added"),
            contact,
        )

    @rule(
        contact=st.sampled_from(CONTACTS),
        channel=st.sampled_from(["email", "sms", "sms"]),  # SMS needs consent: reach it
        purpose=st.sampled_from(["marketing", "marketing", "transactional"]),
        status=st.sampled_from(["granted", "granted", "denied"]),
    )
    def consent_changed(self, contact: str, channel: Any, purpose: Any, status: Any) -> None:
        self._emit(
            ConsentChanged(channel=channel, purpose=purpose, status=status, origin="admin"),
            contact,
        )

    @rule(
        contact=st.sampled_from(CONTACTS),
        timezone=st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"]),
    )
    def identify(self, contact: str, timezone: str) -> None:
        traits = ContactTraits(timezone=timezone)
        self._emit(ContactIdentified(user_id=contact, traits=traits), contact)

    @rule(contact=st.sampled_from(CONTACTS), data=st.data())
    def open_last(self, contact: str, data: st.DataObject) -> None:
        mine = [s for s in self.sim.sends if s.contact_key == contact]
        if mine:
            send = data.draw(st.sampled_from(mine))
            self._emit(EmailOpened(message_id=send.message_id), contact)

    @rule(
        contact=st.sampled_from(CONTACTS),
        answer=st.sampled_from(["very_satisfied", "satisfied", "not_satisfied"]),
    )
    def answer(self, contact: str, answer: Any) -> None:
        if self.orders:
            self._emit(
                SurveyAnswered(
                    answer_id=f"a{len(self.log)}", order_id=f"o{self.orders}", answer=answer
                ),
                contact,
            )

    @rule(contact=st.sampled_from(CONTACTS), name=st.sampled_from(CUSTOM_NAMES))
    def custom(self, contact: str, name: str) -> None:
        payload = CustomTracked(name=name, properties={"product_id": "p1"})
        if self.sim.engine.interest.wants(self._event(payload, contact)):
            self._emit(payload, contact)
        else:
            self._unread(payload, contact)

    @rule(
        contact=st.sampled_from(CONTACTS),
        kind=st.sampled_from(["page", "lifecycle", "rfm", "delivered", "failed", "bounced"]),
    )
    def unread(self, contact: str, kind: str) -> None:
        self._unread(_unread_payload(kind, contact, self.now), contact)

    def _event(self, payload: Payload, contact: str) -> Any:
        """The next event of the log, at the machine's time."""
        return new_event(
            payload,
            shop_id="shop",
            contact_key=contact,
            source="test",
            occurred_at=self.now,
            event_id=deterministic_id("h", str(len(self.log))),
        )

    def _unread(self, payload: Payload, contact: str) -> None:
        """An event outside the engine's interest changes nothing (so a consumer may skip
        it before loading the contact): same state, no commands."""
        self.sim.run_until(self.now)
        self._check_new_sends()
        event = self._event(payload, contact)
        assert not self.sim.engine.interest.wants(event)
        state = self.sim.states.get(contact) or ContactState.new("shop", contact)
        after, commands = self.sim.engine.decide(state, event, self.now, self.sim.shop)
        assert commands == ()
        assert after == state
        self.log.append(event)  # the replay feeds it too, and must skip it alike

    @invariant()
    def one_send_per_instance_step(self) -> None:
        keys = [(s.contact_key, s.plan_instance, s.step) for s in self.sim.sends]
        assert len(keys) == len(set(keys))
        ids = [s.message_id for s in self.sim.sends]
        assert len(ids) == len(set(ids))

    @invariant()
    def every_state_survives_being_stored(self) -> None:
        # what PostgreSQL holds between decisions must read back as the same state
        for state in self.sim.states.values():
            assert unpack_state(pack_state(state)) == state

    def teardown(self) -> None:
        replay = _sim()
        for item in self.log:
            if isinstance(item, tuple):
                replay.run_until(item[1])
            else:
                replay.feed(item)
        assert replay.sends == self.sim.sends


TestEngineMachine = EngineMachine.TestCase
TestEngineMachine.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
