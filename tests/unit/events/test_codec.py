"""The event contract: round trips, and the documented compatibility policy."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from relance_events import (
    PAYLOAD_TYPES,
    DecodeError,
    UnknownPayload,
    UnsupportedSchemaVersion,
    decode,
    deterministic_id,
    encode,
    new_event,
    topic_for,
)
from relance_events import payloads as p
from relance_events.topics import ALL_TOPICS, EVENTS, MESSAGE_REQUESTS, MESSAGE_STATUS, SEGMENTS

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ITEM = p.LineItem(product_id="sku-1", name="Mug", price=Decimal("9.90"), quantity=2)

EXAMPLES: list[p.Payload] = [
    p.ContactIdentified(
        user_id="u1",
        anonymous_id="a1",
        traits=p.ContactTraits(
            email="ada@example.com", phone="+33612345678", birthday=date(1990, 5, 17)
        ),
    ),
    p.ContactTraitsChanged(user_id="u1", changed={"first_name": "Ada"}),
    p.ContactAliased(user_id="u1", previous_id="a1"),
    p.ConsentChanged(
        channel="email", purpose="marketing", status="denied", origin="unsubscribe_link"
    ),
    p.OrderCompleted(order_id="o1", total=Decimal("19.80"), items=[ITEM]),
    p.OrderRefunded(order_id="o1", amount=Decimal("9.90")),
    p.CartChanged(cart_id="c1", items=[ITEM], total=Decimal("19.80"), change="product_added"),
    p.CheckoutStarted(cart_id="c1"),
    p.CustomTracked(name="Wishlist Added", properties={"sku": "x", "n": 2}),
    p.PageViewed(url="https://shop.example/p/1"),
    p.EmailOpened(message_id="m1"),
    p.LinkClicked(plan="birthday", step="wishes", url="https://shop.example"),
    p.SurveyAnswered(answer_id="a", order_id="o1", answer="not_satisfied", comment="late"),
    p.MessageRequested(
        message_id="m1",
        plan="birthday",
        step="wishes",
        plan_instance="i1",
        channel="email",
        purpose="marketing",
    ),
    p.MessageSent(message_id="m1", channel="email"),
    p.MessageDelivered(message_id="m1", channel="sms"),
    p.MessageFailed(message_id="m1", channel="email", reason="550 5.1.1", permanent=True),
    p.MessageBounced(message_id="m1", channel="email", kind="hard", code="5.1.1"),
    p.LifecycleStageChanged(user_id="u1", previous="loyal", current="lapsing", as_of=NOW),
    p.LoyaltyTierChanged(user_id="u1", previous=None, current="discovery", as_of=NOW),
    p.RfmSegmentChanged(
        user_id="u1", previous="loyal", current="at_risk", r=2, f=4, m=4, as_of=NOW
    ),
]


def test_every_payload_type_has_an_example() -> None:
    assert {type(e).TYPE for e in EXAMPLES} == set(PAYLOAD_TYPES)


@pytest.mark.parametrize("payload", EXAMPLES, ids=lambda e: type(e).TYPE)
def test_every_event_type_round_trips_unchanged(payload: p.Payload) -> None:
    event = new_event(payload, shop_id="s", contact_key="u1", source="test", occurred_at=NOW)
    decoded = decode(encode(event))
    assert decoded == event
    assert decoded.type == type(payload).TYPE
    assert decoded.schema_version == type(payload).SCHEMA_VERSION


def _wire(**overrides: Any) -> dict[str, Any]:
    event = new_event(
        p.OrderCompleted(order_id="o1", total=Decimal("5")),
        shop_id="s",
        contact_key="u1",
        source="t",
        occurred_at=NOW,
    )
    data: dict[str, Any] = orjson.loads(encode(event))
    data.update(overrides)
    return data


def test_unknown_fields_are_ignored() -> None:
    data = _wire(new_envelope_field=1)
    data["payload"]["loyalty_points"] = 30
    event = decode(orjson.dumps(data))
    assert isinstance(event.payload, p.OrderCompleted)
    assert not hasattr(event.payload, "loyalty_points")


def test_unknown_types_decode_to_unknown_payload_kept_whole() -> None:
    event = decode(orjson.dumps(_wire(type="loyalty.points_earned", payload={"points": 30})))
    assert isinstance(event.payload, UnknownPayload)
    assert event.payload.model_extra == {"points": 30}


def test_a_newer_schema_version_is_refused_for_dead_lettering() -> None:
    with pytest.raises(UnsupportedSchemaVersion, match="newer"):
        decode(orjson.dumps(_wire(schema_version=2)))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (orjson.dumps({"payload": {}}), "'type'"),
        (orjson.dumps(_wire(payload={"order_id": "o1"})), "payload.total"),
        (orjson.dumps(_wire(occurred_at="2026-03-01T12:00:00")), "timezone"),
    ],
)
def test_poison_bytes_raise_decode_error_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(raw)


def test_payloads_are_frozen_and_bounded() -> None:
    order = p.OrderCompleted(order_id="o1", total=Decimal("1"))
    with pytest.raises(ValidationError):
        order.order_id = "o2"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        p.ContactTraits(phone="0612345678")  # not E.164
    with pytest.raises(ValidationError):
        p.CartChanged(cart_id="c", items=[ITEM] * 501, total=Decimal(0), change="viewed")


def test_partition_key_keeps_one_contact_of_one_shop_together() -> None:
    a = new_event(p.EmailOpened(), shop_id="s", contact_key="u1", source="t", occurred_at=NOW)
    b = new_event(
        p.OrderCompleted(order_id="o", total=Decimal(1)),
        shop_id="s",
        contact_key="u1",
        source="t",
        occurred_at=NOW + timedelta(days=1),
    )
    other_shop = new_event(
        p.EmailOpened(), shop_id="t", contact_key="u1", source="t", occurred_at=NOW
    )
    assert a.partition_key == b.partition_key != other_shop.partition_key


def test_deterministic_ids_are_stable_and_distinct() -> None:
    assert deterministic_id("shop", "msg-1", "0") == deterministic_id("shop", "msg-1", "0")
    assert deterministic_id("shop", "msg-1", "0") != deterministic_id("shop", "msg-1", "1")
    assert deterministic_id("ab", "c") != deterministic_id("a", "bc")
    assert isinstance(deterministic_id("x"), uuid.UUID)


def test_each_type_goes_to_exactly_one_registered_topic() -> None:
    assert topic_for("order.completed") is EVENTS
    assert topic_for("survey.answered") is EVENTS
    assert topic_for("segment.lifecycle_changed") is SEGMENTS
    assert topic_for("contact.traits_changed") is SEGMENTS
    assert topic_for("message.requested") is MESSAGE_REQUESTS
    assert topic_for("message.bounced") is MESSAGE_STATUS
    assert all(topic_for(t) in ALL_TOPICS for t in PAYLOAD_TYPES)
    assert len({t.name for t in ALL_TOPICS}) == len(ALL_TOPICS)
