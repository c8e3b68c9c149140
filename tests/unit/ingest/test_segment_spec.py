"""Segment message -> typed events: every kind, validation errors, ids, carts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_events import deterministic_id
from relance_events.payloads import (
    CartChanged,
    CheckoutStarted,
    ConsentChanged,
    ContactAliased,
    ContactIdentified,
    CustomTracked,
    EmailOpened,
    LineItem,
    LinkClicked,
    OrderCompleted,
    OrderRefunded,
    PageViewed,
)
from relance_events.segment_spec import (
    CartBook,
    CartDelta,
    SegmentValidationError,
    fold_cart,
    segment_to_events,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SHOP = "shop1"


def track(event: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": f"m-{event}",
        "userId": "u1",
        "event": event,
        "properties": properties,
        "timestamp": "2025-03-01T11:00:00Z",
        **extra,
    }


def events_of(message: dict[str, Any], book: CartBook | None = None) -> list[Any]:
    return segment_to_events(message, shop_id=SHOP, received_at=NOW, carts=book)


MAPPING = [
    (
        track("Order Completed", {"order_id": "o1", "revenue": 42.5, "currency": "eur"}),
        OrderCompleted,
        {"order_id": "o1", "total": Decimal("42.5"), "currency": "EUR"},
    ),
    (
        track(
            "Order Completed",
            {"order_id": 7, "products": [{"product_id": "p", "price": 10, "quantity": 3}]},
        ),
        OrderCompleted,
        {"order_id": "7", "total": Decimal(30)},
    ),
    (
        track("Order Refunded", {"order_id": "o1", "total": "12.30"}),
        OrderRefunded,
        {"order_id": "o1", "amount": Decimal("12.30")},
    ),
    (
        track("Product Added", {"product_id": "p1", "price": 5, "quantity": 2}),
        CartChanged,
        {"change": "product_added", "total": Decimal(10)},
    ),
    (
        track("Product Removed", {"product_id": "p1", "cart_id": "c9"}),
        CartChanged,
        {"change": "product_removed", "cart_id": "c9", "items": []},
    ),
    (
        track("Cart Viewed", {"cart_id": "c1", "products": [{"sku": "s1", "price": 2}]}),
        CartChanged,
        {"change": "viewed", "cart_id": "c1", "total": Decimal(2)},
    ),
    (
        track("Checkout Started", {"order_id": "o2", "value": 9.99}),
        CheckoutStarted,
        {"order_id": "o2", "total": Decimal("9.99")},
    ),
    (
        track("Email Opened", {"message_id": "msg-1"}),
        EmailOpened,
        {"message_id": "msg-1"},
    ),
    (
        track("Email Opened", {"plan": "welcome", "step": "j0"}),
        EmailOpened,
        {"plan": "welcome", "step": "j0", "message_id": None},
    ),
    (
        track("Email Link Clicked", {"message_id": "msg-1", "url": "https://x.test/a"}),
        LinkClicked,
        {"url": "https://x.test/a"},
    ),
    (
        track("Wishlist Added", {"sku": "x", "n": [1, 2]}),
        CustomTracked,
        {"name": "Wishlist Added", "properties": {"sku": "x", "n": [1, 2]}},
    ),
    (
        {
            "type": "page",
            "messageId": "p",
            "anonymousId": "a1",
            "name": "Home",
            "properties": {"url": "https://shop.test/"},
        },
        PageViewed,
        {"name": "Home", "url": "https://shop.test/"},
    ),
    (
        {"type": "screen", "messageId": "s", "userId": "u1", "name": "Cart"},
        PageViewed,
        {"name": "Cart"},
    ),
]


@pytest.mark.parametrize(("message", "payload_type", "fields"), MAPPING)
def test_each_kind_maps_to_its_typed_event(
    message: dict[str, Any], payload_type: type, fields: dict[str, Any]
) -> None:
    events = events_of(message)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event.payload, payload_type)
    for name, value in fields.items():
        actual = getattr(event.payload, name)
        if name == "items":
            actual = list(actual)
        assert actual == value, name
    assert event.shop_id == SHOP
    assert event.source == "segment"
    assert event.event_id == deterministic_id(SHOP, message["messageId"], "0")


def test_identify_with_traits_consent_and_both_ids() -> None:
    message = {
        "type": "identify",
        "messageId": "i1",
        "userId": "u1",
        "anonymousId": "a1",
        "timestamp": "2025-03-01T11:59:00+01:00",
        "traits": {
            "email": "ann@example.com",
            "phone": "+33612345678",
            "firstName": "Ann",
            "locale": "fr-FR",
            "timezone": "Europe/Paris",
            "birthday": "1990-05-17",
            "email_consent": "granted",
            "sms_consent": "denied",
            "plan": "gold",
        },
    }
    events = events_of(message)
    kinds = [type(e.payload) for e in events]
    assert kinds == [ContactIdentified, ConsentChanged, ConsentChanged, ContactAliased]
    identified = events[0].payload
    assert identified.user_id == "u1"
    assert identified.anonymous_id == "a1"
    assert identified.traits.first_name == "Ann"
    assert identified.traits.birthday.isoformat() == "1990-05-17"
    assert identified.traits.custom == {"plan": "gold"}
    assert (events[1].payload.channel, events[1].payload.status) == ("email", "granted")
    assert (events[2].payload.channel, events[2].payload.status) == ("sms", "denied")
    assert events[2].payload.origin == "identify"
    assert events[3].payload.previous_id == "a1"
    assert {e.contact_key for e in events} == {"u1"}
    assert events[0].occurred_at == datetime(2025, 3, 1, 10, 59, tzinfo=UTC)


def test_contact_key_is_anon_prefixed_without_user_id() -> None:
    (event,) = events_of({"type": "track", "messageId": "x", "anonymousId": "a7", "event": "E"})
    assert event.contact_key == "anon:a7"
    assert event.occurred_at == NOW


def test_alias_emits_contact_aliased() -> None:
    (event,) = events_of({"type": "alias", "messageId": "al", "userId": "u1", "previousId": "a1"})
    assert isinstance(event.payload, ContactAliased)
    assert event.contact_key == "u1"


def test_same_message_gives_same_event_ids() -> None:
    message = track("Order Completed", {"order_id": "o1", "total": 1})
    assert [e.event_id for e in events_of(message)] == [e.event_id for e in events_of(message)]
    other_shop = segment_to_events(message, shop_id="shop2", received_at=NOW)
    assert other_shop[0].event_id != events_of(message)[0].event_id


def errors_of(message: object, index: int = 0) -> list[dict[str, Any]]:
    with pytest.raises(SegmentValidationError) as caught:
        segment_to_events(message, shop_id=SHOP, received_at=NOW, index=index)
    return caught.value.errors


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (track("Order Completed", {"order_id": "o1", "total": "abc"}), "properties.total"),
        (track("Order Completed", {"order_id": "o1", "total": -3}), "properties.total"),
        (track("Order Completed", {"total": 3}), "properties.order_id"),
        (track("Order Completed", {"order_id": "o1"}), "properties.total"),
        (
            track("Order Completed", {"order_id": "o", "total": 1, "currency": "euro"}),
            "properties.currency",
        ),
        (track("Product Added", {"price": 1}), "properties.product_id"),
        (track("Product Added", {"product_id": "p", "quantity": "2"}), "properties.quantity"),
        (
            track("Cart Viewed", {"products": [{"product_id": "p"}, {"price": 1}]}),
            "properties.products.1.product_id",
        ),
        (track("Email Opened", {}), "properties.message_id"),
        (track("X", {}, messageId=None), "messageId"),
        (track("X", {}, userId=None), "userId"),
        (track("X", {}, userId=True), "userId"),
        (track("X", {}, timestamp="yesterday"), "timestamp"),
        (track("X", {}, timestamp="2025-03-01T11:00:00"), "timestamp"),
        (track("X", {}, timestamp="2025-01-01T00:00:00Z"), "timestamp"),
        (track("X", {}, timestamp="2025-03-01T12:06:00Z"), "timestamp"),
        (track("X", [1, 2]), "properties"),
        (track("", {}), "event"),
        (
            {"type": "identify", "messageId": "i", "userId": "u", "traits": {"phone": "0612"}},
            "traits.phone",
        ),
        (
            {
                "type": "identify",
                "messageId": "i",
                "userId": "u",
                "traits": {"email_consent": "yes"},
            },
            "traits.email_consent",
        ),
        (
            {
                "type": "identify",
                "messageId": "i",
                "userId": "u",
                "traits": {"timezone": "Mars/Olympus"},
            },
            "traits.timezone",
        ),
        (
            {
                "type": "identify",
                "messageId": "i",
                "userId": "u",
                "traits": {"birthday": "17/05/1990"},
            },
            "traits.birthday",
        ),
        (
            {"type": "identify", "messageId": "i", "userId": "u", "traits": {"locale": "x" * 40}},
            "traits.locale",
        ),
        ({"type": "alias", "messageId": "a", "userId": "u"}, "previousId"),
        ({"type": "rename", "messageId": "a", "userId": "u"}, "type"),
    ],
)
def test_invalid_field_is_named_with_index(message: dict[str, Any], field: str) -> None:
    errors = errors_of(message, index=3)
    assert {"index": 3, "field": field} in [
        {"index": e["index"], "field": e["field"]} for e in errors
    ]
    assert all(e["reason"] for e in errors)


def test_all_bad_fields_of_a_message_are_reported() -> None:
    errors = errors_of(track("Order Completed", {"order_id": "", "total": "x", "coupon": 5}))
    assert {e["field"] for e in errors} == {
        "properties.order_id",
        "properties.total",
        "properties.coupon",
    }


def test_history_can_be_replayed_without_the_age_window() -> None:
    old = track("X", {}, timestamp="2019-01-01T00:00:00Z")
    (event,) = segment_to_events(old, shop_id=SHOP, received_at=NOW, max_age=None)
    assert event.occurred_at.year == 2019


def test_not_an_object_is_an_error() -> None:
    assert errors_of(["x"])[0]["reason"] == "not an object"


# --- carts -----------------------------------------------------------------------------


def test_cart_events_carry_the_full_list_and_fold_once_per_message() -> None:
    book = CartBook(SHOP)
    add_a = track("Product Added", {"product_id": "a", "price": 2, "quantity": 1}, messageId="m1")
    add_b = track("Product Added", {"product_id": "b", "price": 3, "quantity": 2}, messageId="m2")
    events_of(add_a, book)
    (second,) = events_of(add_b, book)
    assert [(i.product_id, i.quantity) for i in second.payload.items] == [("a", 1), ("b", 2)]
    assert second.payload.total == Decimal(8)
    (retried,) = events_of(add_b, book)
    assert retried.event_id == second.event_id
    assert retried.payload.items == second.payload.items
    remove = track("Product Removed", {"product_id": "b", "quantity": 1}, messageId="m3")
    (third,) = events_of(remove, book)
    assert [(i.product_id, i.quantity) for i in third.payload.items] == [("a", 1), ("b", 1)]
    assert third.payload.cart_id == second.payload.cart_id


def test_order_completed_closes_the_open_cart_and_names_it() -> None:
    book = CartBook(SHOP)
    (added,) = events_of(track("Product Added", {"product_id": "a"}, messageId="m1"), book)
    (order,) = events_of(track("Order Completed", {"order_id": "o", "total": 1}), book)
    assert order.payload.cart_id == added.payload.cart_id
    (next_cart,) = events_of(track("Product Added", {"product_id": "z"}, messageId="m9"), book)
    assert next_cart.payload.cart_id != added.payload.cart_id
    assert [i.product_id for i in next_cart.payload.items] == ["z"]


def test_alias_moves_anonymous_carts_to_the_user() -> None:
    book = CartBook(SHOP)
    anon_add = track(
        "Product Added",
        {"product_id": "a", "quantity": 2},
        messageId="m1",
        userId=None,
        anonymousId="v1",
    )
    user_add = track("Product Added", {"product_id": "a", "quantity": 1}, messageId="m2")
    events_of(anon_add, book)
    events_of(user_add, book)
    merge = events_of(
        {"type": "alias", "messageId": "al", "userId": "u1", "previousId": "v1"}, book
    )
    assert isinstance(merge[0].payload, ContactAliased)
    merged = [e for e in merge if isinstance(e.payload, CartChanged)]
    assert len(merged) == 1
    assert merged[0].contact_key == "u1"
    assert merged[0].payload.change == "merged"
    assert [(i.product_id, i.quantity) for i in merged[0].payload.items] == [("a", 3)]
    assert book.open_cart_of("anon:v1") is None


def test_identify_merges_explicit_carts_into_the_user() -> None:
    book = CartBook(SHOP)
    events_of(
        track(
            "Product Added",
            {"product_id": "a", "cart_id": "c1"},
            messageId="m1",
            userId=None,
            anonymousId="v1",
        ),
        book,
    )
    events = events_of(
        {"type": "identify", "messageId": "i", "userId": "u1", "anonymousId": "v1"}, book
    )
    merged = [e for e in events if isinstance(e.payload, CartChanged)]
    assert [(e.payload.cart_id, e.contact_key) for e in merged] == [("c1", "u1")]


line_items = st.builds(
    LineItem,
    product_id=st.sampled_from(["a", "b", "c"]),
    price=st.decimals(min_value=0, max_value=100, places=2),
    quantity=st.integers(min_value=0, max_value=5),
)


def _delta(change: str, items: list[LineItem]) -> CartDelta:
    return CartDelta(
        event_id=deterministic_id("x"),
        shop_id=SHOP,
        contact_key="u",
        cart_id=None,
        change=change,  # type: ignore[arg-type]
        items=tuple(items),
        replace=False,
        currency=None,
        occurred_at=NOW,
        received_at=NOW,
        source="segment",
    )


@given(st.lists(line_items, max_size=6), st.lists(line_items, max_size=6))
def test_fold_keeps_one_line_per_product_and_never_negative(
    start: list[LineItem], changes: list[LineItem]
) -> None:
    cart = fold_cart((), _delta("product_added", start))
    for change in changes:
        cart = fold_cart(cart, _delta("product_removed", [change]))
        ids = [line.product_id for line in cart]
        assert len(ids) == len(set(ids))
        assert all(line.quantity >= 0 for line in cart)


@given(st.lists(line_items, min_size=1, max_size=6))
def test_adding_then_removing_the_same_lines_empties_the_cart(items: list[LineItem]) -> None:
    cart = fold_cart((), _delta("product_added", items))
    for item in items:
        cart = fold_cart(cart, _delta("product_removed", [item]))
    assert cart == ()


def test_future_tolerance_is_five_minutes() -> None:
    ok = track("X", {}, timestamp=(NOW + timedelta(minutes=4)).isoformat())
    assert events_of(ok)[0].occurred_at == NOW + timedelta(minutes=4)
