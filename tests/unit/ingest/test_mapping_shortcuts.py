"""The mapper's shortcuts change nothing: same events, same bytes, same errors.

`map_message` builds the envelope (and an order's payload, when its fields are valid by
construction) without a second pydantic validation. Here every message is also mapped
with both shortcuts replaced by validated construction, and the two must agree: equal
events with equal encodings, or equal errors. `map_messages_encoded` (ingest's path) skips
the models altogether: its bytes must be those the models encode to.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relance_events import TraceContext, decode, deterministic_id, encode, new_event
from relance_events import segment_spec as spec
from relance_events.envelope import RELANCE_NAMESPACE
from relance_events.payloads import OrderCompleted
from relance_events.segment_spec import (
    CartDelta,
    CartMerge,
    SegmentValidationError,
    map_message,
    map_messages_encoded,
)
from relance_events.wire import EncodedEvent
from relance_runtime.bus.messages import TopicNames, message_parts

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TRACE = TraceContext(traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")


def _validated_model(cls: Any, values: dict[str, Any]) -> Any:
    return cls(**values)


def _validated_event(payload: Any, **envelope: Any) -> Any:
    return new_event(payload, **envelope)


def reference(message: object, **kwargs: Any) -> Any:
    """`map_message` with every model validated by pydantic, as before the shortcuts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spec, "checked_model", _validated_model)
        patch.setattr(spec, "checked_event", _validated_event)
        return _outcome(message, **kwargs)


def wire_one(message: object, **kwargs: Any) -> list[Any]:
    """Ingest's wire path for a request of this one message."""
    return map_messages_encoded([(None, message)], **kwargs)


def _outcome(message: object, **kwargs: Any) -> Any:
    try:
        return map_message(message, **kwargs)
    except SegmentValidationError as exc:
        return exc.errors


def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values four times in five: most messages should map, some should not."""
    return st.one_of(valid, valid, valid, valid, odd)


good_ids = st.text(alphabet='abcxyz-019é"', min_size=1, max_size=8)
good_quantities = st.integers(min_value=0, max_value=10**6)
good_amounts = st.one_of(
    good_quantities,
    st.floats(min_value=0, max_value=1e6),
    st.decimals(min_value=0, max_value=10**10, places=6).map(str),
)
ids = mostly(
    good_ids,
    st.one_of(
        st.none(),
        st.text(max_size=3),
        st.integers(min_value=-3, max_value=10**6),
        st.sampled_from(["o" * 128, "o" * 129, "  ", True]),
    ),
)
amounts = mostly(
    good_amounts,
    st.one_of(
        st.none(),
        st.integers(min_value=-5, max_value=10**11),
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=1e11),
        st.sampled_from(["9999999999", "9999999999.00001", "1e3", "x", "", "-0"]),
    ),
)
currencies = mostly(
    st.sampled_from(["EUR", "eur", "UsD"]),
    st.sampled_from([None, "EUR\n", "ÉUR", "EU", "EURO", "€€€", 978]),
)
products = st.lists(
    st.fixed_dictionaries(
        {"product_id": ids, "price": amounts},
        optional={"quantity": st.integers(min_value=-1, max_value=10**6), "sku": ids},
    ),
    max_size=3,
)
order_properties = st.fixed_dictionaries(
    {"order_id": ids},
    optional={
        "total": amounts,
        "revenue": amounts,
        "currency": currencies,
        "discount": amounts,
        "coupon": mostly(st.text(max_size=4), st.sampled_from([None, "c" * 257, 5])),
        "cart_id": ids,
        "products": products,
    },
)
events = mostly(
    st.just("Order Completed"),
    st.sampled_from(["Order Refunded", "Checkout Started", "Email Opened", "Signed Up", ""]),
)
timestamps = mostly(
    st.datetimes(
        min_value=datetime(2025, 2, 1), max_value=datetime(2025, 3, 1, 12), timezones=st.just(UTC)
    ).map(datetime.isoformat),
    st.sampled_from(
        [None, "2025-03-01T13:00:00+02:00", "2025-03-01T11:00", "2024-01-01T00:00:00Z", "x", 5]
    ),
)
valid_times = st.datetimes(
    min_value=datetime(2025, 2, 1), max_value=datetime(2025, 3, 1, 12), timezones=st.just(UTC)
).map(datetime.isoformat)
orders = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "messageId": good_ids,
        "userId": good_ids,
        "event": events,
        "properties": order_properties,
        "timestamp": valid_times,
    }
)
anything = st.fixed_dictionaries(
    {
        "type": mostly(st.just("track"), st.sampled_from(["identify", "alias", "page", "nope"])),
        "messageId": ids,
        "userId": ids,
        "event": events,
        "properties": order_properties,
        "timestamp": timestamps,
    },
    optional={
        "anonymousId": ids,
        "previousId": ids,
        "traits": st.fixed_dictionaries({}, optional={"email": st.just("a@b.c")}),
    },
)
messages = st.one_of(orders, anything)
# Orders that map (or fail only where the shortcut's guards look): amounts at Money's
# edges, currencies `_currency` lets through, totals summed from products.
valid_amounts = st.one_of(
    st.integers(min_value=0, max_value=9_999_999_999),
    st.decimals(min_value=0, max_value=9_999_999_999, places=5).map(str),
    st.sampled_from(["9999999999", "9999999998.99995", "0.00005", "0"]),
)
valid_orders = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "messageId": good_ids,
        "userId": good_ids,
        "event": st.just("Order Completed"),
        "timestamp": valid_times,
        "properties": st.fixed_dictionaries(
            {
                "order_id": good_ids,
                "currency": st.sampled_from(["EUR", "EUR", "EUR", "eur", "UsD", "EUR\n", "ÉUR"]),
                "products": st.lists(
                    st.fixed_dictionaries(
                        {"product_id": good_ids, "price": valid_amounts},
                        optional={"quantity": good_quantities},
                    ),
                    min_size=1,
                    max_size=3,
                ),
            },
            optional={
                "total": valid_amounts,
                "discount": valid_amounts,
                "coupon": st.text(max_size=3),
                "cart_id": good_ids,
            },
        ),
    }
)


@settings(max_examples=1000, deadline=None)
@given(
    messages,
    mostly(st.just("shop1"), st.sampled_from(["s" * 64, "s" * 65, ""])),
    mostly(st.just(NOW), st.just(NOW.replace(tzinfo=None))),
    st.one_of(st.none(), st.just(TRACE)),
)
def test_every_message_maps_as_with_validated_models(
    message: dict[str, Any], shop_id: str, received_at: datetime, trace: Any
) -> None:
    kwargs: dict[str, Any] = {"shop_id": shop_id, "received_at": received_at, "trace": trace}
    try:
        expected = reference(message, **kwargs)
    except Exception as exc:  # whatever the validated path raises, the shortcut raises too
        with pytest.raises(type(exc)):
            map_message(message, **kwargs)
        return
    got = _outcome(message, **kwargs)
    assert got == expected
    if isinstance(got, list) and got and not isinstance(got[0], dict):
        for ours, theirs in zip(got, expected, strict=True):
            if hasattr(ours, "payload"):
                assert encode(ours) == encode(theirs)
                assert ours.model_fields_set == theirs.model_fields_set
                assert ours.payload.model_fields_set == theirs.payload.model_fields_set
                assert decode(encode(ours)) == ours


@settings(max_examples=500, deadline=None)
@given(valid_orders, st.one_of(st.none(), st.just(TRACE)))
def test_orders_map_as_with_validated_models(message: dict[str, Any], trace: Any) -> None:
    test_every_message_maps_as_with_validated_models.hypothesis.inner_test(  # type: ignore[attr-defined]
        message, "shop1", NOW, trace
    )


def _either(mapper: Any, message: object, kwargs: dict[str, Any]) -> Any:
    """What `mapper` produces, the errors it names, or the type of what it raises."""
    try:
        return mapper(message, **kwargs)
    except SegmentValidationError as exc:
        return exc.errors
    except Exception as exc:  # whatever the model path raises, the wire path raises too
        return type(exc)


@settings(max_examples=1000, deadline=None)
@given(
    messages,
    mostly(st.just("shop1"), st.sampled_from(["s" * 64, "s" * 65, ""])),
    mostly(st.just(NOW), st.just(NOW.replace(tzinfo=None))),
    st.one_of(
        st.none(),
        st.just(TRACE),
        st.just(TraceContext(traceparent=TRACE.traceparent, tracestate='k=v,"é"')),
    ),
)
def test_the_wire_path_encodes_what_the_models_encode(
    message: dict[str, Any], shop_id: str, received_at: datetime, trace: Any
) -> None:
    kwargs: dict[str, Any] = {"shop_id": shop_id, "received_at": received_at, "trace": trace}
    expected = _either(map_message, message, kwargs)
    got = _either(wire_one, message, kwargs)
    if not isinstance(expected, list) or any(isinstance(e, dict) for e in expected):
        assert got == expected  # the same errors, or the same exception
        return
    assert isinstance(got, list)
    assert len(got) == len(expected)
    names = TopicNames("t.")
    for ours, model in zip(got, expected, strict=True):
        if isinstance(model, CartDelta | CartMerge):
            assert ours == model
            continue
        assert isinstance(ours, EncodedEvent)
        assert ours.value == encode(model)
        assert message_parts(ours, names) == message_parts(model, names)
        assert ours.partition_key == model.partition_key
        closes = model.payload.cart_id if isinstance(model.payload, OrderCompleted) else None
        assert ours.cart_id == closes
        assert ours.event() == model


@settings(max_examples=500, deadline=None)
@given(valid_orders, st.one_of(st.none(), st.just(TRACE)))
def test_orders_take_the_wire_path_as_models(message: dict[str, Any], trace: Any) -> None:
    test_the_wire_path_encodes_what_the_models_encode.hypothesis.inner_test(  # type: ignore[attr-defined]
        message, "shop1", NOW, trace
    )


# Plain `track` messages and their near misses: what `_plain_track` answers, and what it
# must leave to `_map` (padded or integer ids, odd currencies, amounts at Money's edges,
# product lines, anonymous ids, timestamps at the window's edges).
plain_ids = mostly(good_ids, st.sampled_from([" a", "a ", "a\n", "o" * 128, "o" * 129, 7, ""]))
plain_amounts = mostly(
    good_amounts,
    st.sampled_from(
        [
            *("9999999999", "9999999999.00004", " 1.5 ", "-0", "-0.0", "0.00004", "x", "nan"),
            *("1e3", "Infinity", "1_0", -1, True, 0.0, -0.0, 1e-7, 10**18),
        ]
    ),
)
plain_lines = st.fixed_dictionaries(
    {},
    optional={
        "product_id": plain_ids,
        "id": plain_ids,
        "sku": mostly(good_ids, st.sampled_from([None, 5, "s" * 257])),
        "name": mostly(st.text(max_size=3), st.sampled_from([None, 5, "n" * 257])),
        "brand": st.text(max_size=3),
        "price": plain_amounts,
        "quantity": mostly(
            good_quantities,
            st.sampled_from([None, -1, 10**6 + 1, 2.0, True, "1"]),
        ),
        "url": mostly(st.just("https://shop.example/p"), st.sampled_from([None, 7, "u" * 2049])),
    },
)
plain_tracks = st.fixed_dictionaries(
    {
        "type": mostly(st.just("track"), st.just("page")),
        "messageId": plain_ids,
        "userId": plain_ids,
        "event": mostly(
            st.sampled_from(["Order Completed", "Signed Up"]),
            st.sampled_from([" ", "x" * 257, "Email Opened", "Order Refunded"]),
        ),
        "properties": st.fixed_dictionaries(
            {"order_id": plain_ids},
            optional={
                "total": plain_amounts,
                "revenue": plain_amounts,
                "discount": st.one_of(st.none(), plain_amounts),
                "currency": mostly(
                    st.sampled_from(["EUR", "usd"]),
                    st.sampled_from(["EUR\n", "ÉUR", "EU", 978, None]),
                ),
                "coupon": mostly(st.text(max_size=3), st.sampled_from([None, "c" * 257, 5])),
                "cart_id": plain_ids,
                "products": mostly(
                    st.one_of(st.none(), st.lists(plain_lines, max_size=3)),
                    st.sampled_from([{}, "p", [1], [{"product_id": "p"}] * 501]),
                ),
                "plan": st.text(max_size=3),
            },
        ),
    },
    optional={
        "timestamp": mostly(
            valid_times,
            st.sampled_from(
                [
                    "2025-01-30T12:00:00Z",
                    "2025-01-30T12:00:01z",
                    "2025-03-01T12:05:00+00:00",
                    "2025-03-01T12:05:01Z",
                    " 2025-03-01T11:00:00Z ",
                    "2025-03-01T11:00",
                    "x",
                    None,
                    5,
                ]
            ),
        ),
        "anonymousId": st.one_of(st.none(), good_ids),
        "context": mostly(
            st.sampled_from([None, {}, {"ip": "1.2.3.4"}]), st.sampled_from([[], "x"])
        ),
    },
)


@settings(max_examples=1500, deadline=None)
@given(plain_tracks, st.one_of(st.none(), st.just(TRACE)))
def test_plain_tracks_take_the_wire_path_as_models(message: dict[str, Any], trace: Any) -> None:
    test_the_wire_path_encodes_what_the_models_encode.hypothesis.inner_test(  # type: ignore[attr-defined]
        message, "shop1", NOW, trace
    )


valid_plain_tracks = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "messageId": good_ids,
        "userId": good_ids,
        "event": st.sampled_from(["Order Completed", "Order Completed", "Signed Up", "é"]),
        "properties": st.fixed_dictionaries(
            {
                "order_id": good_ids,
                "total": st.one_of(
                    st.integers(min_value=0, max_value=9_999_999_999),
                    st.floats(min_value=0, max_value=1e9),
                    st.decimals(min_value=0, max_value=9_999_999_999, places=5).map(str),
                ),
            },
            optional={
                "discount": st.one_of(st.just(0), st.just("0.00"), st.floats(0, 100)),
                "currency": st.sampled_from(["EUR", "usd", "Gbp"]),
                "coupon": st.text(max_size=5),
                "cart_id": good_ids,
                "products": st.lists(
                    st.fixed_dictionaries(
                        {"product_id": good_ids, "price": valid_amounts},
                        optional={
                            "quantity": good_quantities,
                            "name": st.text(max_size=4),
                            "sku": good_ids,
                            "image_url": st.just("https://cdn.example/p.jpg"),
                        },
                    ),
                    max_size=3,
                ),
                "tags": st.lists(st.text(max_size=3), max_size=2),
                "nested": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            },
        ),
    },
    optional={"timestamp": valid_times, "context": st.just({"ip": "1.2.3.4"})},
)


@settings(max_examples=500, deadline=None)
@given(valid_plain_tracks, st.one_of(st.none(), st.just(TRACE)))
def test_valid_plain_tracks_take_the_wire_path_as_models(
    message: dict[str, Any], trace: Any
) -> None:
    assert (
        spec._plain_track(
            message, "shop1", NOW, None, NOW - spec.MAX_AGE, NOW + spec.MAX_AHEAD, "segment", trace
        )
        is not None
    )
    test_the_wire_path_encodes_what_the_models_encode.hypothesis.inner_test(  # type: ignore[attr-defined]
        message, "shop1", NOW, trace
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(plain_tracks, messages), max_size=6), st.booleans())
def test_a_request_maps_as_its_messages_one_by_one(
    batch: list[dict[str, Any]], forced_type: bool
) -> None:
    kind: Any = "track" if forced_type else None
    kwargs: dict[str, Any] = {"shop_id": "shop1", "received_at": NOW}
    expected: list[Any] = []
    errors: list[dict[str, Any]] = []
    for index, message in enumerate(batch):
        try:
            expected.extend(map_message(message, index=index, message_type=kind, **kwargs))
        except SegmentValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        with pytest.raises(SegmentValidationError) as caught:
            map_messages_encoded([(kind, m) for m in batch], **kwargs)
        assert caught.value.errors == errors
        return
    got = map_messages_encoded([(kind, m) for m in batch], **kwargs)
    assert [g.event() if isinstance(g, EncodedEvent) else g for g in got] == expected


def test_plain_orders_and_custom_events_skip_the_general_mapper() -> None:
    """The fast path is taken for the commonest messages (else it would rot unnoticed)."""
    order = {
        "type": "track",
        "messageId": "m1",
        "userId": "u1",
        "event": "Order Completed",
        "timestamp": "2025-03-01T11:00:00Z",
        "properties": {"order_id": "o1", "total": 42.5, "currency": "eur", "cart_id": "c1"},
    }
    custom = {"type": "track", "messageId": "m2", "userId": "u1", "event": "Signed Up"}
    for message in (order, custom):
        plain = spec._plain_track(
            message, "shop1", NOW, None, NOW - spec.MAX_AGE, NOW + spec.MAX_AHEAD, "segment", TRACE
        )
        assert plain is not None
        assert plain == wire_one(message, shop_id="shop1", received_at=NOW, trace=TRACE)[0]
    assert (
        spec._plain_track(
            order, "shop1", NOW, None, NOW - spec.MAX_AGE, NOW + spec.MAX_AHEAD, "segment", None
        ).cart_id
        == "c1"
    )  # type: ignore[union-attr]


def test_wire_times_and_text_are_written_as_pydantic_writes_them() -> None:
    for timestamp in (
        "2025-03-01T13:00:00.5+02:00",
        "2025-03-01T11:00:00-00:00",
        "2025-03-01T11:59:59.000001Z",
        "2025-03-01T06:29:00-05:30",
        "2025-03-01T12:00:00+00:00:01",
    ):
        message = {
            "type": "track",
            "messageId": "m\x00\u2028",
            "userId": 'ü"\\1\x7f',
            "event": "Order Completed",
            "timestamp": timestamp,
            "properties": {
                "order_id": "o1",
                "total": "12.34567",
                "products": [{"id": "p", "price": 1.5, "name": None, "quantity": 2.0}],
            },
        }
        kwargs: dict[str, Any] = {"shop_id": "shop1", "received_at": NOW}
        (model,) = map_message(message, **kwargs)
        (ours,) = wire_one(message, **kwargs)
        assert isinstance(ours, EncodedEvent)
        assert ours.value == encode(model)  # type: ignore[arg-type]


def test_an_order_total_summed_past_money_is_still_refused_by_validation() -> None:
    message = {
        "type": "track",
        "messageId": "m1",
        "userId": "u1",
        "event": "Order Completed",
        "properties": {
            "order_id": "o1",
            "products": [{"product_id": "p", "price": 9_999_999_999, "quantity": 1000}],
        },
    }
    with pytest.raises(SegmentValidationError) as caught:
        map_message(message, shop_id="shop1", received_at=NOW)
    assert caught.value.errors[0]["field"] == "total"


def test_events_carry_the_request_trace() -> None:
    message = {"type": "track", "messageId": "m1", "userId": "u1", "event": "Signed Up"}
    (event,) = map_message(message, shop_id="shop1", received_at=NOW, trace=TRACE)
    assert event.trace == TRACE  # type: ignore[union-attr]


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_deterministic_ids_are_uuid5(parts: list[str]) -> None:
    name = "\x1f".join(parts)
    try:
        expected = uuid.uuid5(RELANCE_NAMESPACE, name)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            deterministic_id(*parts)
        return
    assert deterministic_id(*parts) == expected


def test_encode_is_pydantics_json_without_nones() -> None:
    message = {
        "type": "track",
        "messageId": "m1",
        "userId": 'ü"1',
        "event": "Order Completed",
        "timestamp": "2025-03-01T13:00:00.5+02:00",
        "properties": {"order_id": "o1", "total": 12, "products": [{"id": "p", "price": 1.5}]},
    }
    (event,) = map_message(message, shop_id="shop1", received_at=NOW - timedelta(seconds=1))
    assert encode(event) == event.model_dump_json(exclude_none=True).encode()  # type: ignore[union-attr]
