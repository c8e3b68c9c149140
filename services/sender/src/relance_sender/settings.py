"""Sender settings: `RELANCE_SENDER_*`, plus the shared `RELANCE_SMTP_URL`, `RELANCE_PUBLIC_URL`
and `RELANCE_TOKEN_KEYS`."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SenderSettings(BaseSettings):
    # populate_by_name: `SenderSettings(smtp_url=...)` sets the field; without it, a field
    # with an alias silently ignores its own name and mail would go to the outbox.
    model_config = SettingsConfigDict(
        env_prefix="RELANCE_SENDER_", extra="ignore", frozen=True, populate_by_name=True
    )

    smtp_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RELANCE_SMTP_URL", "RELANCE_SENDER_SMTP_URL"),
        description="SMTP server, e.g. smtp://user:pass@host:587?starttls=true (smtps:// for "
        "implicit TLS). Unset: emails go to the outbox directory.",
    )
    public_url: str = Field(
        default="http://localhost:8000",
        validation_alias=AliasChoices("RELANCE_PUBLIC_URL", "RELANCE_SENDER_PUBLIC_URL"),
        description="Base of tracking, unsubscribe and survey links (the platform's, when wired).",
    )
    token_keys: str = Field(
        default="dev:relance-dev-only-token-key",
        validation_alias=AliasChoices("RELANCE_TOKEN_KEYS", "RELANCE_SENDER_TOKEN_KEYS"),
        description="Link-token keys (the platform's, when wired).",
    )
    outbox_dir: Path = Field(
        default=Path("var/outbox"),
        description="Where .eml files and SMS JSON lines go without SMTP / SMS provider "
        "(default: <data_dir>/outbox).",
    )
    instance: str = Field(
        default_factory=socket.gethostname,
        description="This process's name in the send ledger (leases of interrupted sends).",
    )

    marketing_from: str = Field(
        default="Relance Shop <news@localhost>", description="From address of plan emails."
    )
    transactional_from: str = Field(
        default="Relance Shop <orders@localhost>",
        description="From address of transactional (order-related) emails.",
    )
    reply_to: str | None = Field(default=None, description="Reply-To of every email.")
    message_id_domain: str = Field(default="localhost", description="Domain of Message-ID.")
    feedback_sender_id: str = Field(
        default="relance", description="SenderId part of the Feedback-ID header."
    )

    dkim_selector: str | None = Field(
        default=None, description="DKIM selector; signing is on with selector, domain and key."
    )
    dkim_domain: str | None = Field(default=None, description="DKIM signing domain (d=).")
    dkim_private_key_file: Path | None = Field(
        default=None, description="PEM file of the DKIM RSA private key."
    )
    dkim_signer: Literal["openssl", "dkimpy"] = Field(
        default="openssl",
        description=(
            "`openssl`: dkimpy's canonicalisation with OpenSSL's RSA (~0.3 ms a message);"
            " `dkimpy`: dkimpy throughout, pure-Python RSA (~7 ms a message)."
        ),
    )

    sms_provider: Literal["twilio", "json"] | None = Field(
        default=None,
        description="`twilio` (Twilio-compatible REST) or `json` (generic JSON HTTP). Unset: "
        "SMS go to the outbox directory.",
    )
    sms_url: str | None = Field(default=None, description="Base URL of the SMS provider API.")
    sms_account_sid: str | None = Field(
        default=None, description="Provider account id (Twilio basic-auth user)."
    )
    sms_auth_token: str | None = Field(
        default=None, description="Provider token (basic-auth password, inbound signatures)."
    )
    sms_from: str = Field(default="RELANCE", description="SMS sender id or number.")

    shop_name: str = Field(default="Relance Shop", description="Shop name shown in messages.")
    shop_url: str = Field(default="http://localhost:8000", description="Shop home page.")
    shop_support_url: str = Field(
        default="http://localhost:8000/contact",
        description="Customer service page (reassurance emails).",
    )
    shop_review_url: str = Field(
        default="http://localhost:8000/reviews",
        description="Where satisfied customers leave a public review.",
    )
    shop_cart_url: str | None = Field(
        default=None, description="Link of cart reminders (default: <shop url>/cart)."
    )
    shop_cart_retention_days: int = Field(
        default=7, ge=1, description="Days after its last change that an unpaid cart is cleared."
    )
    shop_postal_address: str | None = Field(
        default=None, description="Postal address printed in marketing emails."
    )
    shop_social: str = Field(
        default="",
        description="Social profiles for thank-you emails: `Instagram=https://...,Facebook=...`.",
    )
    default_locale: Literal["fr", "en"] = Field(
        default="fr", description="Language when the contact has none."
    )

    rate_limits: dict[str, float] = Field(
        default_factory=lambda: {"email": 500.0, "sms": 20.0, "twilio": 10.0},
        description='Sends per second by channel and provider, JSON: {"email": 500, "sms": 20}.',
    )

    retry_initial_s: float = Field(
        default=1800.0, description="First retry delay after a temporary (4xx) failure."
    )
    retry_max_s: float = Field(default=4 * 3600.0, description="Longest delay between retries.")
    retry_horizon_s: float = Field(
        default=4 * 24 * 3600.0, description="Give up on temporary failures after this long."
    )
    sending_lease_s: float = Field(
        default=900.0, description="A send still `sending` after this long was interrupted."
    )

    concurrency: int = Field(
        default=8, ge=1, le=256, description="Deliveries one process runs at once."
    )
    claim_batch: int = Field(
        default=16,
        ge=1,
        le=1000,
        description=(
            "Message requests claimed in one ledger transaction. Larger batches cost fewer"
            " database round trips per message; after a crash, claimed marketing messages"
            " whose delivery had not finished are marked ambiguous, never resent, so at most"
            " about twice this many are at stake per process."
        ),
    )
    due_poll_s: float = Field(
        default=5.0, gt=0, description="How often retries and expired leases are looked at."
    )
    due_batch: int = Field(default=100, ge=1, le=10_000, description="Retries handled per look.")

    failpoint: Literal["after_smtp_250", "after_ledger_commit"] | None = Field(
        default=None,
        description="Test hook: SIGKILL this process at that point of a send (kill tests only).",
    )

    @field_validator(
        "smtp_url",
        "sms_provider",
        "sms_url",
        "reply_to",
        "dkim_selector",
        "dkim_domain",
        "dkim_private_key_file",
        "shop_postal_address",
        "shop_cart_url",
        "failpoint",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Kubernetes Secrets and Compose files often carry `VAR=""` for "not configured".
        return None if value == "" else value
