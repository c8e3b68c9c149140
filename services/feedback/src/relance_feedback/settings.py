"""Feedback settings. The support webhook names follow the issue (`RELANCE_SUPPORT_...`,
`RELANCE_WEBHOOK_ALLOWLIST`), so they share the `RELANCE_` prefix. The public URL (links
back to the contact) and the data directory (the local alert file) are the platform's.

Without `RELANCE_SUPPORT_WEBHOOK_URL`, alerts are written to
`<data_dir>/outbox/support_alerts.jsonl` (signed too when a secret is set)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from relance_feedback.domain.addresses import Allowlist
from relance_feedback.domain.signing import WebhookSecret
from relance_feedback.errors import FeedbackError


class FeedbackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELANCE_", extra="ignore", frozen=True)

    support_webhook_url: str | None = Field(
        default=None,
        description="Where unhappy-customer alerts go (Standard Webhooks). Unset: "
        "<data_dir>/outbox/support_alerts.jsonl.",
    )
    support_webhook_secret: str | None = Field(
        default=None, description="Signing secret `whsec_<base64>`; required with a URL."
    )
    support_webhook_secret_previous: str | None = Field(
        default=None,
        description="During a rotation, the old secret: alerts carry both signatures.",
    )
    support_webhook_payload: Literal["full", "minimal", "slack"] = Field(
        default="full",
        description="`full` (contact and order details), `minimal` (ids only) or `slack`.",
    )
    support_webhook_timeout_s: float = Field(
        default=15.0, gt=0, le=30, description="Per-attempt timeout; only a 2xx within it counts."
    )
    webhook_allowlist: str = Field(
        default="",
        description="Hosts or CIDRs exempt from the SSRF guard (support tools on an internal "
        "network), comma-separated.",
    )
    feedback_delivery_batch: int = Field(
        default=20, ge=1, le=500, description="Alerts one worker claims at a time."
    )
    feedback_delivery_idle_s: float = Field(
        default=1.0, gt=0, le=60, description="How often the alert worker looks for due alerts."
    )

    @field_validator("support_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("the support webhook URL is http(s)://...")
        return value

    @field_validator("support_webhook_secret", "support_webhook_secret_previous")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value:
            try:
                WebhookSecret.parse(value)
            except FeedbackError as exc:
                raise ValueError(str(exc)) from None
        return value or None

    @field_validator("webhook_allowlist")
    @classmethod
    def _allowlist(cls, value: str) -> str:
        try:
            Allowlist.parse(value)
        except FeedbackError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _signed(self) -> FeedbackSettings:
        if self.support_webhook_url and not self.support_webhook_secret:
            raise ValueError("a support webhook URL needs RELANCE_SUPPORT_WEBHOOK_SECRET")
        return self

    def secrets(self) -> tuple[WebhookSecret, ...]:
        return tuple(
            WebhookSecret.parse(s)
            for s in (self.support_webhook_secret, self.support_webhook_secret_previous)
            if s
        )

    def allowlist(self) -> Allowlist:
        return Allowlist.parse(self.webhook_allowlist)
