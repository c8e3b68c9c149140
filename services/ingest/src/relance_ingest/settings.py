"""Ingest settings (`RELANCE_INGEST_*`); the token keys are the shared `RELANCE_TOKEN_KEYS`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELANCE_INGEST_", frozen=True, extra="ignore")

    # Segment's own limits: 32 KB per event, 500 KB per batch call.
    max_event_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Largest event (decompressed bytes); 413 above."
    )
    max_batch_bytes: int = Field(
        default=500 * 1024, ge=1024, description="Largest /v1/batch body (decompressed); 413 above."
    )
    max_batch_events: int = Field(
        default=100, ge=1, le=10_000, description="Most events in one /v1/batch call; 400 above."
    )
    max_form_bytes: int = Field(
        default=16 * 1024, ge=256, description="Largest unsubscribe form body."
    )
    rate_per_s: float = Field(
        default=5_000.0,
        gt=0,
        description="Events per second per write key (token bucket); 429 + Retry-After above. "
        "Raise it for bulk imports.",
    )
    rate_burst: float = Field(default=10_000.0, ge=1, description="Token bucket size per key.")
    bus_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After sent with 503 when the bus does not acknowledge."
    )
    max_event_age_days: int = Field(
        default=30, ge=1, description="Events with an older timestamp are refused (400)."
    )
    max_clock_skew_s: int = Field(
        default=300, ge=0, description="How far in the future a timestamp may be (400 beyond)."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes serving ingest's port (SO_REUSEPORT) when it runs on its "
        "own (`relance serve ingest`); each drains on SIGTERM. One per core on a VM; "
        "containers usually keep 1 and scale by replicas.",
    )
