"""Sender settings: `RELANCE_SENDER_*`, plus the shared `RELANCE_SMTP_URL`, `RELANCE_PUBLIC_URL`
and `RELANCE_TOKEN_KEYS`."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SenderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELANCE_SENDER_", extra="ignore", frozen=True)

    smtp_url: str | None = Field(
        default=None, validation_alias=AliasChoices("RELANCE_SMTP_URL", "RELANCE_SENDER_SMTP_URL")
    )
    public_url: str = Field(
        default="http://localhost:8000",
        validation_alias=AliasChoices("RELANCE_PUBLIC_URL", "RELANCE_SENDER_PUBLIC_URL"),
    )
    token_keys: str = Field(
        default="dev:relance-dev-only-token-key",
        validation_alias=AliasChoices("RELANCE_TOKEN_KEYS", "RELANCE_SENDER_TOKEN_KEYS"),
    )
    outbox_dir: Path = Path("var/outbox")
    instance: str = Field(default_factory=socket.gethostname)

    marketing_from: str = "Relance Shop <news@localhost>"
    transactional_from: str = "Relance Shop <orders@localhost>"
    reply_to: str | None = None
    message_id_domain: str = "localhost"
    feedback_sender_id: str = "relance"

    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key_file: Path | None = None

    sms_provider: Literal["twilio", "json"] | None = None
    sms_url: str | None = None
    sms_account_sid: str | None = None
    sms_auth_token: str | None = None
    sms_from: str = "RELANCE"

    shop_name: str = "Relance Shop"
    shop_url: str = "http://localhost:8000"
    shop_support_url: str = "http://localhost:8000/contact"
    shop_review_url: str = "http://localhost:8000/reviews"
    shop_postal_address: str | None = None
    # "Instagram=https://instagram.com/shop,Facebook=https://facebook.com/shop"
    shop_social: str = ""
    default_locale: Literal["fr", "en"] = "fr"

    # Sends per second, by channel ("email", "sms") and by provider ("smtp", "twilio"...).
    rate_limits: dict[str, float] = Field(
        default_factory=lambda: {"email": 500.0, "sms": 20.0, "twilio": 10.0}
    )

    retry_initial_s: float = 1800.0
    retry_max_s: float = 4 * 3600.0
    retry_horizon_s: float = 4 * 24 * 3600.0
    sending_lease_s: float = 900.0
