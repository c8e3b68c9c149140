"""Marketing pressure and consent: legal basis, quiet hours and the cross-plan frequency cap.

Documented rules:
- Basis: transactional messages need no marketing consent but stop on a transactional
  objection. Marketing email: `granted` always; no answer yet is a valid basis only for a
  customer (soft opt-in); `denied` (an objection) never. Marketing SMS: only `granted`.
  A message without a basis is dropped (not retried: consent is never assumed later).
- Quiet hours: a message due outside its channel's send window (contact's timezone, the
  shop's when unknown) is held until the window next opens.
- Frequency cap: at most `max_messages` marketing messages per contact and channel in any
  rolling `window`. Messages due at the same time are served in plan priority order (lower
  number first). A capped message is held until the oldest message in the window leaves
  it, unless that is later than the step's `max_hold` after the step first fell due, in
  which case it is dropped. Every hold and drop is recorded as a `DecisionRecorded`.

A merchant sets caps and send windows through `settings.PolicySettings` (the
`RELANCE_ORCHESTRATOR_` variables, or the same keys in `relance simulate --config`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relance_events.payloads import Channel, Purpose
from relance_orchestrator.domain.facts import ContactFacts
from relance_orchestrator.domain.timing import SMS_DEFAULT_WINDOW, SendWindow

BasisVerdict = Literal["consent", "soft_opt_in", "transactional", "no_basis", "objection"]


class FrequencyCap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_messages: int = Field(default=3, ge=1, le=1000)
    window: timedelta = timedelta(days=7)


class Policy(BaseModel):
    """Shop-wide pressure settings; defaults follow the spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email_window: SendWindow | None = None
    sms_window: SendWindow = SMS_DEFAULT_WINDOW
    sms_window_by_country: dict[str, SendWindow] = Field(default_factory=dict)
    email_cap: FrequencyCap = FrequencyCap(max_messages=3)
    sms_cap: FrequencyCap = FrequencyCap(max_messages=2)
    attribution_window: timedelta = timedelta(days=5)

    def window_for(self, channel: Channel, country: str | None) -> SendWindow | None:
        if channel == "email":
            return self.email_window
        if country is not None and country in self.sms_window_by_country:
            return self.sms_window_by_country[country]
        return self.sms_window

    def cap_for(self, channel: Channel) -> FrequencyCap:
        return self.email_cap if channel == "email" else self.sms_cap


def legal_basis(facts: ContactFacts, channel: Channel, purpose: Purpose) -> BasisVerdict:
    if purpose == "transactional":
        if facts.consent_for(channel, "transactional") == "denied":
            return "objection"
        return "transactional"
    status = facts.consent_for(channel, "marketing")
    if status == "denied":
        return "objection"
    if status == "granted":
        return "consent"
    if channel == "email" and facts.is_customer:
        return "soft_opt_in"
    return "no_basis"


def cap_release(
    facts: ContactFacts, channel: Channel, cap: FrequencyCap, now: datetime
) -> datetime | None:
    """None when one more marketing message fits now, else when the next one will."""
    recent = sorted(s.at for s in facts.sends_since(channel, now - cap.window))
    if len(recent) < cap.max_messages:
        return None
    return recent[len(recent) - cap.max_messages] + cap.window
