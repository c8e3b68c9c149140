"""Orchestrator settings (prefix `RELANCE_ORCHESTRATOR_`)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELANCE_ORCHESTRATOR_", extra="ignore", frozen=True
    )

    shop_timezone: str = Field(
        default="UTC", description="IANA zone of contacts whose own timezone is unknown."
    )
    plans_dir: Path | None = Field(
        default=None, description="A folder of plan YAML files overriding or adding plans."
    )
    attribution_window_days: float = Field(
        default=5.0, gt=0, le=90, description="A purchase this long after a message counts."
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
