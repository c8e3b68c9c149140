"""Ingest settings (`RELANCE_INGEST_*`); the token keys are the shared `RELANCE_TOKEN_KEYS`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELANCE_INGEST_", frozen=True, extra="ignore")

    # Segment's own limits: 32 KB per event, 500 KB per batch call.
    max_event_bytes: int = Field(default=32 * 1024, ge=1024)
    max_batch_bytes: int = Field(default=500 * 1024, ge=1024)
    max_batch_events: int = Field(default=100, ge=1, le=10_000)
    max_form_bytes: int = Field(default=16 * 1024, ge=256)
    # Token bucket per write key, counted in events.
    rate_per_s: float = Field(default=5_000.0, gt=0)
    rate_burst: float = Field(default=10_000.0, ge=1)
    # Retry-After sent with 503 when the bus does not acknowledge.
    bus_retry_after_s: int = Field(default=5, ge=1)
    max_event_age_days: int = Field(default=30, ge=1)
    max_clock_skew_s: int = Field(default=300, ge=0)
