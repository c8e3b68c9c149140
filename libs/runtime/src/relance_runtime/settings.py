"""Settings shared by every service (prefix `RELANCE_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from relance_runtime.gc_tuning import DEFAULT_THRESHOLDS, parse_thresholds


class CommonSettings(BaseSettings):
    """What every process needs: where the database and the bus are, and how to report.

    Every field maps to an environment variable `RELANCE_<FIELD>` (upper case).
    """

    model_config = SettingsConfigDict(env_prefix="RELANCE_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL DSN. Unset: an embedded PostgreSQL 16 (pgserver) under var/.",
    )
    bus: Literal["kafka", "postgres"] = Field(
        default="postgres",
        description="`kafka` for real Apache Kafka, `postgres` for the embedded durable log.",
    )
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    topic_prefix: str = Field(
        default="", description="Prefix for every topic and consumer group (tests, tenancy)."
    )
    data_dir: Path = Field(default=Path("var"), description="Embedded PostgreSQL, outbox files.")
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public base URL of tracking, unsubscribe and survey links.",
    )
    token_keys: str = Field(
        default="dev:relance-dev-token-key-change-me",
        description="Link-token keys `kid:secret[,kid:secret]`; the first signs, all verify.",
    )
    write_keys: str = Field(
        default="",
        description="Write keys (send events): `shop:key,shop:key2` or `key` for shop 'default'.",
    )
    admin_keys: str = Field(
        default="",
        description="Admin keys (read and manage APIs), same format. Keys may also live in "
        "the database (hashed); several active keys of a kind allow rotation.",
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    log_format: Literal["json", "text"] = Field(default="json", description="Log line format.")
    otel_exporter: Literal["none", "console", "otlp", "file"] = Field(
        default="none",
        description="Where spans go: nowhere, stderr, an OTLP/HTTP collector, or JSON lines "
        "appended to RELANCE_OTEL_FILE (tests gather several processes' spans there).",
    )
    otel_file: Path | None = Field(
        default=None, description="The span file of the `file` exporter."
    )
    otel_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP endpoint, e.g. http://collector:4318/v1/traces."
    )
    clock_offset_file: Path | None = Field(
        default=None,
        description="Test hook: a file holding seconds added to every service's clock.",
    )
    gc_thresholds: str = Field(
        default=DEFAULT_THRESHOLDS,
        description="CPython GC thresholds `g0,g1,g2` once the process has started (empty: "
        "CPython's 700,10,10); startup objects are frozen either way.",
    )
    db_pool_max: int = Field(
        default=20, ge=2, le=500, description="Most PostgreSQL connections one process opens."
    )
    consumer_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most events a consumer handles per batch."
    )
    drain_timeout_s: float = Field(
        default=10.0, description="On SIGTERM, how long an in-flight batch may take."
    )
    consumer_commit_interval_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description=(
            "Consumers commit their offsets at most this often (and on stop); 0: after every"
            " batch. After a crash, up to this much handled work is redelivered (and deduped)."
        ),
    )

    def database_dir(self) -> Path:
        return self.data_dir / "pgdata"

    @field_validator("gc_thresholds")
    @classmethod
    def _gc_thresholds(cls, value: str) -> str:
        parse_thresholds(value)  # a ValueError names the setting in pydantic's error
        return value
