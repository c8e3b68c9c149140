"""Named RFM segments: a grid over recency and a combined frequency-monetary score.

`fm = floor((f + m) / 2)`, so fm is 5 only when both f and m are 5. Rows are r (5 = most
recent), columns fm:

    r\\fm  1               2                   3                   4          5
    5      new_customers   potential_loyalist  potential_loyalist  champions  champions
    4      promising       potential_loyalist  potential_loyalist  loyal      loyal
    3      about_to_sleep  about_to_sleep      need_attention      loyal      loyal
    2      hibernating     hibernating         at_risk             at_risk    cannot_lose_them
    1      lost            hibernating         at_risk             at_risk    cannot_lose_them
"""

from __future__ import annotations

from relance_events.payloads import RfmSegment

_ROWS: dict[int, tuple[RfmSegment, RfmSegment, RfmSegment, RfmSegment, RfmSegment]] = {
    5: ("new_customers", "potential_loyalist", "potential_loyalist", "champions", "champions"),
    4: ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose_them"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cannot_lose_them"),
}


def fm_score(f: int, m: int) -> int:
    return (f + m) // 2


def segment_of(r: int, f: int, m: int) -> RfmSegment:
    """The segment of one (r, f, m) triple; every triple in 1..5 has exactly one."""
    if not all(1 <= s <= 5 for s in (r, f, m)):
        raise ValueError(f"RFM scores must be in 1..5, got {(r, f, m)}")
    return _ROWS[r][fm_score(f, m) - 1]


def segment_grid() -> list[RfmSegment]:
    """The grid flattened as `[(r - 1) * 5 + fm - 1]`: what the SQL recompute indexes."""
    return [_ROWS[r][fm - 1] for r in range(1, 6) for fm in range(1, 6)]
