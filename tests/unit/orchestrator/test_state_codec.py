"""The stored form of a contact state: MessagePack by field name, and the JSON of before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relance_orchestrator.adapters.state_codec import pack_state, unpack_state
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.policy import Policy
from relance_orchestrator.domain.state import ContactState, StepRecord
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.simulate import Simulation, read_segment_jsonl

LEGACY = Path(__file__).parent / "data" / "legacy_state.json"
USER = "zz-contact-placeholder-zz"
SHOP = ShopFacts(shop_id="shop", timezone="UTC", average_basket=Decimal("50"))
# +02:00: the offsets a shop's events carry survive in the legacy JSON, not in MessagePack
T0 = datetime(2026, 6, 1, 9, tzinfo=timezone(timedelta(hours=2)))


# the two products of the story the legacy fixture was written from
PRODUCTS = [
    {
        "product_id": f"p{i}",
        "sku": f"SKU-{i}",
        "name": f"Produit {i}",
        "price": 19.9 + i,
        "quantity": 1 + i,
        "category": "maison",
    }
    for i in range(2)
]


def _message(kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
    name = f"{fields['event']}-" if "event" in fields else ""
    return {
        "type": kind,
        "userId": USER,
        "messageId": f"{kind[:2]}-{name}{at.timestamp()}",
        "timestamp": at.isoformat(),
        **fields,
    }


def _story() -> list[dict[str, Any]]:
    """What the legacy fixture was written from (by the pydantic state models): an
    abandoned cart that a later order checks out."""
    return [
        _message(
            "identify",
            T0,
            traits={"email": "ann@example.fr", "first_name": "Ann", "email_consent": "granted"},
        ),
        _message(
            "track",
            T0 + timedelta(minutes=1),
            event="Product Added",
            properties={"cart_id": "k1", **PRODUCTS[0]},
        ),
        _message(
            "track",
            T0 + timedelta(minutes=2),
            event="Product Added",
            properties={"cart_id": "k1", **PRODUCTS[1]},
        ),
        _message(
            "track",
            T0 + timedelta(days=2),
            event="Order Completed",
            properties={
                "order_id": "o9",
                "total": 80,
                "currency": "EUR",
                "cart_id": "k1",
                "products": PRODUCTS,
            },
        ),
    ]


def _built() -> ContactState:
    sim = Simulation(engine=Engine(load_plans(), Policy()), shop=SHOP)
    for event in read_segment_jsonl((orjson.dumps(m) for m in _story()), shop_id="shop"):
        sim.feed(event)
    return sim.states[USER]


def test_a_packed_state_reads_back_equal_and_is_smaller_than_its_json() -> None:
    state = _built()
    assert state.plans and state.facts.sends and state.facts.carts  # a state with everything
    packed = pack_state(state)
    assert unpack_state(packed) == state
    assert pack_state(unpack_state(packed)) == packed
    assert len(packed) < len(LEGACY.read_text()) / 2


def _coupon_expiry_aside(state: ContactState) -> ContactState:
    """The state with its codes' expiry dates blanked: the fixture was written when a
    plan's code expired `valid_days` after the plan's anchor, not after its first message."""
    plans = {
        name: plan.evolve(
            {
                "instances": {
                    key: instance.evolve({"coupon_expires_at": None})
                    for key, instance in plan.instances.items()
                }
            }
        )
        for name, plan in state.plans.items()
    }
    return state.evolve({"plans": plans})


def test_the_json_an_earlier_version_stored_still_reads() -> None:
    legacy = unpack_state(None, LEGACY.read_text())
    assert _coupon_expiry_aside(legacy) == _coupon_expiry_aside(_built())
    assert any(i.coupon_expires_at for p in legacy.plans.values() for i in p.instances.values())
    assert unpack_state(pack_state(legacy)) == legacy


def test_datetimes_come_back_as_the_same_instants_in_utc() -> None:
    state = _built()
    order = state.facts.last_order
    assert order is not None and order.at.utcoffset() == timedelta(hours=2)
    back = unpack_state(pack_state(state)).facts.last_order
    assert back is not None
    assert back.at == order.at and back.at.tzinfo == UTC


def test_an_unknown_field_or_a_wrong_shape_is_refused() -> None:
    raw = orjson.loads(LEGACY.read_text())
    raw["facts"]["shoe_size"] = 44  # written by a newer version: not silently dropped
    with pytest.raises(msgspec.DecodeError):
        unpack_state(None, orjson.dumps(raw).decode())
    with pytest.raises(msgspec.DecodeError):
        unpack_state(b"\x93\x01\x02")
    with pytest.raises(msgspec.DecodeError):
        unpack_state(None, None)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["waiting", "scheduled", "sent"]),
    st.datetimes(timezones=st.just(UTC)),
    st.text(max_size=8),
)
def test_evolve_replaces_only_the_given_fields(status: Any, at: datetime, variant: str) -> None:
    record = StepRecord(status=status, due_at=at)
    fast = record.evolve({"variant": variant, "settled_at": at})
    assert fast == StepRecord(status=status, due_at=at, variant=variant, settled_at=at)
    assert record.variant is None  # the original is untouched
    with pytest.raises(AttributeError):
        record.variant = "x"  # type: ignore[misc]
