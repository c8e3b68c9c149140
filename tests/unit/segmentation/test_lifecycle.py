"""Lifecycle stage and loyalty tier: exactly one stage, calendar-month cutoffs, tiers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_events.payloads import LifecycleStage
from relance_segmentation.domain.lifecycle import (
    Cutoffs,
    LifecycleConfig,
    lifecycle_stage,
    loyalty_tier,
    months_before,
)

NOW = datetime(2024, 8, 31, 10, 0, tzinfo=UTC)
CONFIG = LifecycleConfig()
CUTOFFS = Cutoffs.at(NOW, CONFIG)


@pytest.mark.parametrize(
    ("now", "months", "expected"),
    [
        (datetime(2024, 8, 31, 10, tzinfo=UTC), 6, datetime(2024, 2, 29, 10, tzinfo=UTC)),
        (datetime(2024, 8, 31, 10, tzinfo=UTC), 12, datetime(2023, 8, 31, 10, tzinfo=UTC)),
        (datetime(2024, 3, 15, tzinfo=UTC), 6, datetime(2023, 9, 15, tzinfo=UTC)),
        (datetime(2023, 7, 31, tzinfo=UTC), 6, datetime(2023, 1, 31, tzinfo=UTC)),
        (datetime(2023, 12, 31, tzinfo=UTC), 12, datetime(2022, 12, 31, tzinfo=UTC)),
    ],
)
def test_months_before_is_calendar_and_clamped(
    now: datetime, months: int, expected: datetime
) -> None:
    assert months_before(now, months) == expected


def stage(orders: int, last: datetime | None, m: int | None = 3) -> LifecycleStage:
    return lifecycle_stage(
        orders_count=orders, last_order_at=last, m_score=m, cutoffs=CUTOFFS, config=CONFIG
    )


@pytest.mark.parametrize(
    ("orders", "last", "m", "expected"),
    [
        (0, None, None, "prospect"),
        (1, NOW - timedelta(days=3), 3, "new_customer"),
        (1, NOW - timedelta(days=3), 5, "ambassador"),
        (2, NOW - timedelta(days=3), 1, "loyal"),
        (4, NOW - timedelta(days=3), 4, "loyal"),
        (5, NOW - timedelta(days=3), 1, "ambassador"),
        (5, datetime(2024, 2, 29, 10, tzinfo=UTC), 5, "lapsing"),
        (5, datetime(2024, 2, 29, 10, 1, tzinfo=UTC), 5, "ambassador"),
        (1, datetime(2023, 8, 31, 10, tzinfo=UTC), 3, "ex_customer"),
        (1, datetime(2023, 8, 31, 10, 1, tzinfo=UTC), 3, "lapsing"),
    ],
)
def test_stage_table(orders: int, last: datetime | None, m: int | None, expected: str) -> None:
    assert stage(orders, last, m) == expected


def test_the_day_six_months_are_reached_the_customer_becomes_lapsing() -> None:
    last = datetime(2024, 1, 10, 9, 30, tzinfo=UTC)
    day_before = datetime(2024, 7, 9, 9, 30, tzinfo=UTC)
    that_day = datetime(2024, 7, 10, 9, 30, tzinfo=UTC)
    for now, expected in ((day_before, "loyal"), (that_day, "lapsing")):
        got = lifecycle_stage(
            orders_count=2,
            last_order_at=last,
            m_score=2,
            cutoffs=Cutoffs.at(now, CONFIG),
            config=CONFIG,
        )
        assert got == expected


@given(
    st.integers(min_value=0, max_value=50),
    st.one_of(st.none(), st.integers(min_value=0, max_value=900)),
    st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
)
def test_exactly_one_stage_for_any_aggregate(orders: int, days: int | None, m: int | None) -> None:
    last = None if days is None else NOW - timedelta(days=days)
    assert stage(orders, last, m) in get_args(LifecycleStage)


@pytest.mark.parametrize(
    ("orders", "net", "days_ago", "expected"),
    [
        (0, "0", None, None),
        (1, "20", 1, "discovery"),
        (2, "40", 1, "recurrence"),
        (4, "999.99", 1, "recurrence"),
        (1, "1000", 1, "premium"),
        (5, "50", 1, "premium"),
        (10, "2000", 1, "ambassador"),
        (10, "1999", 1, "premium"),
        (12, "9000", 400, "premium"),
    ],
)
def test_tier_table(orders: int, net: str, days_ago: int | None, expected: str | None) -> None:
    last = None if days_ago is None else NOW - timedelta(days=days_ago)
    got = loyalty_tier(
        orders_count=orders,
        net_monetary=Decimal(net),
        last_order_at=last,
        cutoffs=CUTOFFS,
        config=CONFIG,
    )
    assert got == expected


def test_config_refuses_inverted_windows() -> None:
    with pytest.raises(ValueError, match="lapsing"):
        LifecycleConfig(lapsing_after_months=12, ex_customer_after_months=6)
