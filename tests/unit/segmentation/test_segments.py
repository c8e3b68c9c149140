"""The RFM segment grid is total and follows its documented shape."""

from __future__ import annotations

from itertools import product
from typing import get_args

import pytest

from relance_events.payloads import RfmSegment
from relance_segmentation.domain.segments import segment_grid, segment_of


def test_every_one_of_the_125_triples_has_exactly_one_segment() -> None:
    seen = {(r, f, m): segment_of(r, f, m) for r, f, m in product(range(1, 6), repeat=3)}
    assert len(seen) == 125
    assert all(s in get_args(RfmSegment) for s in seen.values())
    assert set(seen.values()) == set(get_args(RfmSegment))


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 5, "champions"),
        (5, 1, 1, "new_customers"),
        (4, 1, 1, "promising"),
        (4, 4, 4, "loyal"),
        (3, 3, 3, "need_attention"),
        (3, 1, 2, "about_to_sleep"),
        (2, 3, 4, "at_risk"),
        (1, 5, 5, "cannot_lose_them"),
        (2, 1, 2, "hibernating"),
        (1, 1, 1, "lost"),
        (5, 2, 3, "potential_loyalist"),
    ],
)
def test_named_examples(r: int, f: int, m: int, segment: str) -> None:
    assert segment_of(r, f, m) == segment


def test_flat_grid_matches_segment_of_for_sql() -> None:
    grid = segment_grid()
    for r, f, m in product(range(1, 6), repeat=3):
        assert grid[(r - 1) * 5 + (f + m) // 2 - 1] == segment_of(r, f, m)


@pytest.mark.parametrize("bad", [(0, 1, 1), (6, 1, 1), (1, 1, 9)])
def test_out_of_range_scores_are_refused(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match=r"1\.\.5"):
        segment_of(*bad)
