"""Calendar arithmetic in the contact's timezone: delays, send hours, birthdays, quiet hours."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from relance_orchestrator.domain.plan import Delay


@lru_cache(maxsize=512)
def zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year = day.year + month0 // 12
    month = month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _local(naive_local: datetime, tz: ZoneInfo) -> datetime:
    return naive_local.replace(tzinfo=tz).astimezone(UTC)


def due_at(anchor: datetime, delay: Delay, tz: ZoneInfo, send_hour: int | None) -> datetime:
    """`anchor + delay`; day-based delays keep the anchor's local time of day, or use
    `send_hour` (local) when one is set."""
    if not delay.is_day_based and send_hour is None:
        return anchor + delay.clock_part
    local = anchor.astimezone(tz)
    day = add_months(local.date(), delay.months) + timedelta(days=delay.days)
    clock = time(send_hour) if send_hour is not None else local.time().replace(tzinfo=None)
    return _local(datetime.combine(day, clock), tz) + delay.clock_part


def next_birthday_anchor(
    after: datetime, birthday: date | None, fallback: datetime | None, tz: ZoneInfo
) -> datetime | None:
    """The 1st of the birthday month at local midnight, at or after `after`'s local day;
    without a birthday, the next anniversary of `fallback` (first order or signup)."""
    local_day = after.astimezone(tz).date()
    if birthday is not None:
        candidate = date(local_day.year, birthday.month, 1)
        if candidate < local_day:
            candidate = date(local_day.year + 1, birthday.month, 1)
        return _local(datetime.combine(candidate, time(0)), tz)
    if fallback is None:
        return None
    start = fallback.astimezone(tz)
    years = max(1, local_day.year - start.year - 1)
    candidate = add_months(start.date(), 12 * years)
    while candidate < local_day:
        years += 1
        candidate = add_months(start.date(), 12 * years)
    return _local(datetime.combine(candidate, start.time().replace(tzinfo=None)), tz)


class SendWindow(BaseModel):
    """When a channel may send, in the contact's local time: weekdays (0 = Monday) and
    an [start, end) hour range."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weekdays: frozenset[int] = Field(default=frozenset(range(7)))
    start: time = time(0)
    end: time | None = None  # None = until midnight

    def allows(self, local: datetime) -> bool:
        if local.weekday() not in self.weekdays:
            return False
        clock = local.time().replace(tzinfo=None)
        return clock >= self.start and (self.end is None or clock < self.end)

    def next_allowed(self, at: datetime, tz: ZoneInfo) -> datetime:
        """`at` itself when allowed, else the start of the next allowed period."""
        local = at.astimezone(tz)
        if self.allows(local):
            return at
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.weekdays:
                continue
            opening = _local(datetime.combine(day, self.start), tz)
            if opening > at:
                return opening
        raise ValueError("a send window must allow at least one weekday")


SMS_DEFAULT_WINDOW = SendWindow(weekdays=frozenset(range(6)), start=time(10), end=time(19))
