"""RFM values and quintile scores.

Method (the SQL recompute uses the same): over the N contacts with at least one order,
order each dimension from worst to best value, take `rank_min` = 1 + the number of
strictly worse values (SQL `RANK()`), and score `1 + floor(5 * (rank_min - 1) / N)`.
Equal values share a rank, hence a score; a better value has a larger rank, hence a
score at least as high; `rank_min - 1 <= N - 1` keeps every score in 1..5.
Worst first means: recency in days descending, frequency and monetary ascending.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", int, Decimal)

SCORES = (1, 2, 3, 4, 5)
Direction = Literal["higher_is_better", "lower_is_better"]
_DAY = timedelta(days=1)


def recency_days(last_order_at: datetime, now: datetime) -> int:
    """Whole days since the last order (floor), as of `now`."""
    return (now - last_order_at) // _DAY


@dataclass(frozen=True)
class RfmValues:
    recency_days: int
    frequency: int
    monetary: Decimal


@dataclass(frozen=True)
class RfmScores:
    r: int
    f: int
    m: int


def quintile_score(rank_min: int, population: int) -> int:
    return 1 + (5 * (rank_min - 1)) // population


def quintile_scores(values: Sequence[V], direction: Direction) -> list[int]:
    """Scores 1..5 for each value, aligned with `values`."""
    n = len(values)
    if n == 0:
        return []
    ordered = sorted(values)
    scores: list[int] = []
    for value in values:
        if direction == "higher_is_better":
            worse = bisect_left(ordered, value)
        else:
            worse = n - bisect_right(ordered, value)
        scores.append(quintile_score(worse + 1, n))
    return scores


def score_all(values: Mapping[K, RfmValues]) -> dict[K, RfmScores]:
    """Score every contact of a shop that has at least one order."""
    keys = list(values)
    rs = quintile_scores([values[k].recency_days for k in keys], "lower_is_better")
    fs = quintile_scores([values[k].frequency for k in keys], "higher_is_better")
    ms = quintile_scores([values[k].monetary for k in keys], "higher_is_better")
    return {k: RfmScores(r, f, m) for k, r, f, m in zip(keys, rs, fs, ms, strict=True)}


@dataclass(frozen=True)
class RfmBoundaries:
    """Per score 2..5, the worst value that still reaches it (None: no value does).

    Used to score one contact between two full recomputes: `score_values` gives exactly
    the recompute's score to any value present in the population it was computed on.
    """

    recency_days: tuple[int | None, int | None, int | None, int | None]
    frequency: tuple[int | None, int | None, int | None, int | None]
    monetary: tuple[Decimal | None, Decimal | None, Decimal | None, Decimal | None]
    population: int


def _thresholds(values: Sequence[V], scores: Sequence[int], direction: Direction) -> list[V | None]:
    out: list[V | None] = []
    for s in SCORES[1:]:
        reaching = [v for v, sc in zip(values, scores, strict=True) if sc >= s]
        if not reaching:
            out.append(None)
        elif direction == "higher_is_better":
            out.append(min(reaching))
        else:
            out.append(max(reaching))
    return out


def boundaries(values: Mapping[K, RfmValues]) -> RfmBoundaries:
    keys = list(values)
    rv = [values[k].recency_days for k in keys]
    fv = [values[k].frequency for k in keys]
    mv = [values[k].monetary for k in keys]
    r = _thresholds(rv, quintile_scores(rv, "lower_is_better"), "lower_is_better")
    f = _thresholds(fv, quintile_scores(fv, "higher_is_better"), "higher_is_better")
    m = _thresholds(mv, quintile_scores(mv, "higher_is_better"), "higher_is_better")
    return RfmBoundaries(
        recency_days=(_int(r[0]), _int(r[1]), _int(r[2]), _int(r[3])),
        frequency=(_int(f[0]), _int(f[1]), _int(f[2]), _int(f[3])),
        monetary=(_dec(m[0]), _dec(m[1]), _dec(m[2]), _dec(m[3])),
        population=len(keys),
    )


def _int(v: int | Decimal | None) -> int | None:
    return None if v is None else int(v)


def _dec(v: int | Decimal | None) -> Decimal | None:
    return None if v is None else Decimal(v)


Bounds = tuple[V | None, V | None, V | None, V | None]


def worse_needed(population: int) -> tuple[int, int, int, int]:
    """For scores 2..5, how many strictly worse values reach it: `ceil((s - 1) * N / 5)`."""
    a, b, c, d = (-(-(s - 1) * population // 5) for s in SCORES[1:])
    return a, b, c, d


def boundaries_from_counts(counts: Iterable[tuple[V, int]], population: int) -> Bounds[V]:
    """Boundaries of scores 2..5 from how many contacts hold each distinct value, the values
    ordered worst first: per score, the first value with enough strictly worse values."""
    needed = worse_needed(population)
    found: list[V | None] = [None, None, None, None]
    worse = 0
    i = 0
    for value, n in counts:
        while i < 4 and worse >= needed[i]:
            found[i] = value
            i += 1
        if i == 4:
            break
        worse += n
    return found[0], found[1], found[2], found[3]


def _score_by(thresholds: Sequence[int | Decimal | None], value: int | Decimal, lower: bool) -> int:
    score = 1
    for s, t in zip(SCORES[1:], thresholds, strict=True):
        if t is not None and (value <= t if lower else value >= t):
            score = s
    return score


def score_values(b: RfmBoundaries, v: RfmValues) -> RfmScores:
    """Score one contact against stored boundaries (between two full recomputes)."""
    return RfmScores(
        r=_score_by(b.recency_days, v.recency_days, lower=True),
        f=_score_by(b.frequency, v.frequency, lower=False),
        m=_score_by(b.monetary, v.monetary, lower=False),
    )
