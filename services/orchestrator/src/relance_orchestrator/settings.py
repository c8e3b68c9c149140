"""Orchestrator settings (prefix `RELANCE_ORCHESTRATOR_`).

`PolicySettings` (marketing pressure) is shared with `relance simulate --config`, whose
file takes the same keys in lower case, so a backtest runs under the shop's real policy.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from relance_orchestrator.domain.policy import FrequencyCap, Policy
from relance_orchestrator.domain.timing import SendWindow

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW_FORMAT = (
    "expected 'DAYS HH:MM-HH:MM' such as 'mon-sat 10:00-19:00' (days: mon..sun, ranges "
    "and commas such as 'mon-fri,sun', or 'daily'; either part may be left out; "
    "24:00 is midnight)"
)
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def _weekday(name: str) -> int:
    if name not in WEEKDAYS:
        raise ValueError(f"unknown day {name!r}; {WINDOW_FORMAT}")
    return WEEKDAYS.index(name)


def _days(text: str) -> frozenset[int]:
    if text == "daily":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        start = _weekday(first)
        end = _weekday(last) if dash else start
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))  # sat-mon wraps
    return frozenset(days)


def _clock(hour: str, minute: str) -> time | None:
    h, m = int(hour), int(minute)
    if (h, m) == (24, 0):
        return None
    if h > 23 or m > 59:
        raise ValueError(f"{hour}:{minute} is not a time of day; {WINDOW_FORMAT}")
    return time(h, m)


def parse_send_window(text: str) -> SendWindow:
    """`mon-sat 10:00-19:00` as a `SendWindow` (local time, end excluded)."""
    parts = text.strip().lower().split()
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"{text!r}: {WINDOW_FORMAT}")
    weekdays, start, end = frozenset(range(7)), time(0), None
    hours = _HOURS.match(parts[-1])
    if hours is not None:
        start_at = _clock(hours[1], hours[2])
        if start_at is None:
            raise ValueError(f"{text!r}: a window cannot start at 24:00")
        start, end = start_at, _clock(hours[3], hours[4])
        if end is not None and end <= start:
            raise ValueError(f"{text!r}: the end must be after the start (no overnight windows)")
        parts = parts[:-1]
    elif ":" in parts[-1] or len(parts) == 2:
        raise ValueError(f"{text!r}: {WINDOW_FORMAT}")
    if parts:
        weekdays = _days(parts[0])
    return SendWindow(weekdays=weekdays, start=start, end=end)


class PolicySettings(BaseModel):
    """Marketing pressure; the defaults are `Policy()`'s (the spec's)."""

    attribution_window_days: float = Field(
        default=5.0, gt=0, le=90, description="A purchase this long after a message counts."
    )
    email_cap_max_messages: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Most marketing emails per contact (all plans) in any rolling cap window;"
        " more are held, or dropped past the step's `max_hold`.",
    )
    email_cap_window_days: float = Field(
        default=7.0, gt=0, le=365, description="Rolling window of the email frequency cap."
    )
    sms_cap_max_messages: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="Most marketing SMS per contact (all plans) in any rolling cap window.",
    )
    sms_cap_window_days: float = Field(
        default=7.0, gt=0, le=365, description="Rolling window of the SMS frequency cap."
    )
    email_send_window: str | None = Field(
        default=None,
        description="When email may go out, contact's local time, e.g. `mon-fri 08:00-21:00`;"
        " held outside it. Unset (or `any`): any time.",
    )
    sms_send_window: str = Field(
        default="mon-sat 10:00-19:00",
        description="When SMS may go out, contact's local time (`DAYS HH:MM-HH:MM`, days"
        " `mon`..`sun`, ranges, commas or `daily`); held outside it.",
    )

    @field_validator("email_send_window")
    @classmethod
    def _email_window(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "any"):
            return None
        parse_send_window(value)
        return value

    @field_validator("sms_send_window")
    @classmethod
    def _sms_window(cls, value: str) -> str:
        parse_send_window(value)
        return value

    def policy(self) -> Policy:
        return Policy(
            email_window=(
                parse_send_window(self.email_send_window) if self.email_send_window else None
            ),
            sms_window=parse_send_window(self.sms_send_window),
            email_cap=FrequencyCap(
                max_messages=self.email_cap_max_messages,
                window=timedelta(days=self.email_cap_window_days),
            ),
            sms_cap=FrequencyCap(
                max_messages=self.sms_cap_max_messages,
                window=timedelta(days=self.sms_cap_window_days),
            ),
            attribution_window=timedelta(days=self.attribution_window_days),
        )


class OrchestratorSettings(BaseSettings, PolicySettings):
    model_config = SettingsConfigDict(
        env_prefix="RELANCE_ORCHESTRATOR_", extra="ignore", frozen=True
    )

    shop_timezone: str = Field(
        default="UTC", description="IANA zone of contacts whose own timezone is unknown."
    )
    plans_dir: Path | None = Field(
        default=None, description="A folder of plan YAML files overriding or adding plans."
    )
    timer_batch: int = Field(
        default=500, ge=1, le=10_000, description="Due timers one instance claims at a time."
    )
    timer_idle_s: float = Field(
        default=0.075, gt=0, le=10, description="Pause of the timer loop when nothing is due."
    )
    timer_max_attempts: int = Field(
        default=5, ge=1, le=100, description="Failed firings before a timer is parked."
    )
    timer_retry_backoff_s: float = Field(
        default=5.0, gt=0, le=3600, description="First delay before a failed timer fires again."
    )
    shop_facts_ttl_s: float = Field(
        default=60.0, ge=0, le=3600, description="How long the shop's average basket is cached."
    )

    @field_validator("shop_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as Europe/Paris") from None
        return value
