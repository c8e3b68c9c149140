"""CSAT and NPS, computed from answer counts over a time window.

- CSAT is the share of satisfaction answers that are `very_satisfied` or `satisfied`, in %.
- NPS is % promoters (9-10) minus % detractors (0-6) among NPS answers, from -100 to 100.
Both are None when the window holds no answer of that kind (0 would be a lie).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_WINDOW_DAYS = 3660
DEFAULT_WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90)


@dataclass(frozen=True, slots=True)
class Window:
    label: str
    start: datetime
    end: datetime


def windows_ending_at(now: datetime, days: tuple[int, ...]) -> tuple[Window, ...]:
    """Rolling windows `[now - d days, now)`, one per entry of `days`."""
    _check_days(days)
    return tuple(Window(f"{d}d", now - timedelta(days=d), now) for d in days)


def _check_days(days: tuple[int, ...]) -> None:
    for d in days:
        if not 1 <= d <= MAX_WINDOW_DAYS:
            raise ValueError(f"a window is between 1 and {MAX_WINDOW_DAYS} days")


def parse_windows(text: str | None) -> tuple[int, ...]:
    """`"7d,30d"` -> (7, 30); None or empty -> the defaults. At most 10 windows."""
    if not text:
        return DEFAULT_WINDOWS_DAYS
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or len(parts) > 10:
        raise ValueError("between 1 and 10 windows, like 7d,30d")
    days: list[int] = []
    for part in parts:
        digits = part[:-1] if part.endswith("d") else part
        if not digits.isdigit():
            raise ValueError(f"{part!r} is not a number of days like 30d")
        days.append(int(digits))
    _check_days(tuple(days))
    return tuple(days)


@dataclass(frozen=True, slots=True)
class AnswerCounts:
    very_satisfied: int = 0
    satisfied: int = 0
    not_satisfied: int = 0
    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    @property
    def csat_answers(self) -> int:
        return self.very_satisfied + self.satisfied + self.not_satisfied

    @property
    def nps_answers(self) -> int:
        return self.promoters + self.passives + self.detractors


def nps_bucket(score: int) -> str:
    if score >= 9:
        return "promoter"
    if score >= 7:
        return "passive"
    return "detractor"


def csat(counts: AnswerCounts) -> float | None:
    total = counts.csat_answers
    if total == 0:
        return None
    return round(100.0 * (counts.very_satisfied + counts.satisfied) / total, 2)


def nps(counts: AnswerCounts) -> float | None:
    total = counts.nps_answers
    if total == 0:
        return None
    return round(100.0 * (counts.promoters - counts.detractors) / total, 2)
