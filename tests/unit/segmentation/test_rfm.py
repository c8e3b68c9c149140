"""RFM scoring: the documented rank method, its invariants, and the stored boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_segmentation.domain.rfm import (
    RfmValues,
    boundaries,
    boundaries_from_counts,
    quintile_scores,
    recency_days,
    score_all,
    score_values,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "days"),
    [
        (NOW, 0),
        (NOW - timedelta(hours=23, minutes=59), 0),
        (NOW - timedelta(days=1), 1),
        (NOW - timedelta(days=1, seconds=1), 1),
        (NOW - timedelta(days=30, hours=12), 30),
        (NOW + timedelta(seconds=1), -1),
    ],
)
def test_recency_is_whole_days_floored(last: datetime, days: int) -> None:
    assert recency_days(last, NOW) == days


@pytest.mark.parametrize(
    ("values", "direction", "expected"),
    [
        ([1, 2, 3, 4, 5], "higher_is_better", [1, 2, 3, 4, 5]),
        ([5, 4, 3, 2, 1], "lower_is_better", [1, 2, 3, 4, 5]),
        ([1, 1, 1, 1, 2], "higher_is_better", [1, 1, 1, 1, 5]),
        ([7, 7, 7], "higher_is_better", [1, 1, 1]),
        ([10], "lower_is_better", [1]),
        (list(range(10)), "higher_is_better", [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
        ([1, 2, 2, 3], "higher_is_better", [1, 2, 2, 4]),
    ],
)
def test_quintile_scores_table(values: list[int], direction: str, expected: list[int]) -> None:
    assert quintile_scores(values, direction) == expected  # type: ignore[arg-type]


values_lists = st.lists(st.integers(min_value=-50, max_value=50), min_size=1, max_size=60)


@given(values_lists, st.sampled_from(["higher_is_better", "lower_is_better"]))
def test_scores_in_range_ties_equal_and_monotonic(values: list[int], direction: str) -> None:
    scores = quintile_scores(values, direction)  # type: ignore[arg-type]
    assert all(1 <= s <= 5 for s in scores)
    for v1, s1 in zip(values, scores, strict=True):
        for v2, s2 in zip(values, scores, strict=True):
            if v1 == v2:
                assert s1 == s2
            better = v1 > v2 if direction == "higher_is_better" else v1 < v2
            if better:
                assert s1 >= s2


@given(values_lists)
def test_distinct_values_spread_over_quintiles(values: list[int]) -> None:
    distinct = sorted(set(values))
    scores = quintile_scores(distinct, "higher_is_better")
    # with distinct values, score k holds the k-th fifth: exactly rank-based
    for i, s in enumerate(scores):
        assert s == 1 + (5 * i) // len(distinct)


contact_values = st.dictionaries(
    st.text(min_size=1, max_size=4),
    st.builds(
        RfmValues,
        recency_days=st.integers(min_value=0, max_value=400),
        frequency=st.integers(min_value=1, max_value=12),
        monetary=st.decimals(
            min_value=Decimal("-100"), max_value=Decimal("5000"), places=2, allow_nan=False
        ),
    ),
    min_size=1,
    max_size=80,
)


@given(contact_values)
def test_boundaries_reproduce_every_population_score(values: dict[str, RfmValues]) -> None:
    scored = score_all(values)
    b = boundaries(values)
    assert b.population == len(values)
    for key, v in values.items():
        assert score_values(b, v) == scored[key]


@given(contact_values)
def test_boundaries_from_value_counts_equal_the_rank_method(values: dict[str, RfmValues]) -> None:
    """What the SQL recompute does for recency and frequency: one count per distinct value."""
    expected = boundaries(values)
    n = len(values)

    def counts(of: list[int]) -> dict[int, int]:
        return {v: of.count(v) for v in set(of)}

    recency = counts([v.recency_days for v in values.values()])
    frequency = counts([v.frequency for v in values.values()])
    monetary = [v.monetary for v in values.values()]
    assert boundaries_from_counts(sorted(recency.items(), reverse=True), n) == expected.recency_days
    assert boundaries_from_counts(sorted(frequency.items()), n) == expected.frequency
    by_value = sorted((m, monetary.count(m)) for m in set(monetary))
    assert boundaries_from_counts(by_value, n) == expected.monetary


def test_boundaries_of_a_small_shop() -> None:
    values = {
        str(i): RfmValues(recency_days=100 - 10 * i, frequency=i + 1, monetary=Decimal(i * 10))
        for i in range(10)
    }
    b = boundaries(values)
    assert b.recency_days == (80, 60, 40, 20)
    assert b.frequency == (3, 5, 7, 9)
    assert b.monetary == (Decimal(20), Decimal(40), Decimal(60), Decimal(80))
    newcomer = RfmValues(recency_days=0, frequency=1, monetary=Decimal(55))
    assert (score_values(b, newcomer).r, score_values(b, newcomer).f) == (5, 1)
    assert score_values(b, newcomer).m == 3
