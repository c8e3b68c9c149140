"""Merging an anonymous contact into the known one (contact.aliased)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from relance_events.event import new_event
from relance_events.payloads import (
    ContactAliased,
    ContactIdentified,
    ContactTraits,
    OrderCompleted,
)
from relance_segmentation.domain.aggregates import (
    ContactAggregate,
    OpenCart,
    alias_sources,
    apply,
    merge,
)

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_alias_sources() -> None:
    aliased = new_event(
        ContactAliased(user_id="u1", previous_id="a1"),
        shop_id="s1",
        contact_key="u1",
        source="test",
        occurred_at=NOW,
    )
    assert alias_sources(aliased) == ("anon:a1", "a1")
    identified = new_event(
        ContactIdentified(user_id="u1", anonymous_id="a2"),
        shop_id="s1",
        contact_key="u1",
        source="test",
        occurred_at=NOW,
    )
    assert alias_sources(identified) == ("anon:a2",)
    anonymous = new_event(
        ContactIdentified(anonymous_id="a2"),
        shop_id="s1",
        contact_key="anon:a2",
        source="test",
        occurred_at=NOW,
    )
    assert alias_sources(anonymous) == ()
    itself = new_event(
        ContactAliased(user_id="u1", previous_id="u1"),
        shop_id="s1",
        contact_key="u1",
        source="test",
        occurred_at=NOW,
    )
    assert alias_sources(itself) == ("anon:u1",)


def test_merge_adds_history_and_known_values_win() -> None:
    cart = OpenCart("k1", Decimal(10), "EUR", 1, NOW)
    known = ContactAggregate(
        "s1",
        "u1",
        traits=ContactTraits(email="known@example.com"),
        consent={"email:marketing": "denied"},
        orders_count=1,
        gross=Decimal(30),
        first_order_at=NOW - timedelta(days=3),
        last_order_at=NOW - timedelta(days=3),
        last_order_total=Decimal(30),
    )
    anonymous = ContactAggregate(
        "s1",
        "anon:a1",
        traits=ContactTraits(email="old@example.com", first_name="Ada"),
        consent={"email:marketing": "granted", "sms:marketing": "granted"},
        orders_count=2,
        gross=Decimal(50),
        refunded=Decimal(5),
        first_order_at=NOW - timedelta(days=10),
        last_order_at=NOW - timedelta(days=1),
        last_order_total=Decimal(20),
        open_carts={"k1": cart},
        last_email_open_at=NOW,
    )
    merged = merge(known, anonymous, NOW)
    assert merged.contact_key == "u1"
    assert (merged.orders_count, merged.gross, merged.refunded) == (3, 80, 5)
    assert merged.first_order_at == NOW - timedelta(days=10)
    assert merged.last_order_at == NOW - timedelta(days=1)
    assert merged.last_order_total == Decimal(20)  # the later order's
    assert merged.traits.email == "known@example.com"
    assert merged.traits.first_name == "Ada"
    assert merged.consent == {"email:marketing": "denied", "sms:marketing": "granted"}
    assert merged.open_carts == {"k1": cart}
    assert merged.last_email_open_at == NOW


amounts = st.integers(min_value=1, max_value=10_000).map(Decimal)
days = st.integers(min_value=0, max_value=400)


@given(
    st.lists(st.tuples(amounts, days), max_size=6),
    st.lists(st.tuples(amounts, days), max_size=6),
)
def test_merging_equals_having_had_every_order(
    mine: list[tuple[Decimal, int]], theirs: list[tuple[Decimal, int]]
) -> None:
    def fold(key: str, orders: list[tuple[Decimal, int]], start: int) -> ContactAggregate:
        agg = ContactAggregate("s1", key)
        for n, (total, ago) in enumerate(orders):
            event = new_event(
                OrderCompleted(order_id=f"{key}-{start + n}", total=total),
                shop_id="s1",
                contact_key=key,
                source="test",
                occurred_at=NOW - timedelta(days=ago),
            )
            agg = apply(agg, event, NOW)
        return agg

    merged = merge(fold("u1", mine, 0), fold("anon:a1", theirs, 100), NOW)
    whole = fold("u1", mine + theirs, 0)
    assert (merged.orders_count, merged.gross, merged.first_order_at, merged.last_order_at) == (
        whole.orders_count,
        whole.gross,
        whole.first_order_at,
        whole.last_order_at,
    )
    if whole.last_order_at is not None:
        assert merged.last_order_total in {
            t for t, ago in mine + theirs if NOW - timedelta(days=ago) == whole.last_order_at
        }
