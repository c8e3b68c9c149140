"""The last check before a send: suppression and consent, as read when the send starts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from relance_sender.domain.ledger import Channel, Purpose

ConsentStatus = Literal["granted", "denied"]
SuppressionReason = Literal["hard_bounce", "repeated_bounces", "provider_opt_out", "sms_keyword"]

# Bounces (other than a missing mailbox) for one address before it is suppressed like a hard bounce.
REPEATED_BOUNCES_LIMIT = 3


@dataclass(frozen=True, slots=True)
class Suppression:
    shop_id: str
    channel: Channel
    address: str
    reason: SuppressionReason
    at: datetime


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    shop_id: str
    contact_key: str
    channel: Channel
    purpose: Purpose
    status: ConsentStatus
    at: datetime


@dataclass(frozen=True, slots=True)
class Allowed:
    """Nothing stands in the way of this send."""


BlockCause = SuppressionReason | Literal["consent"]


@dataclass(frozen=True, slots=True)
class Blocked:
    reason: str
    cause: BlockCause


SendDecision = Allowed | Blocked


def may_send(
    *,
    channel: Channel,
    purpose: Purpose,
    suppression: Suppression | None,
    consent: ConsentRecord | None,
) -> SendDecision:
    """Whether the send may start now.

    The orchestrator already chose a legal basis; this re-check only catches what changed
    since: a suppressed address blocks every purpose (it cannot receive), an objection
    blocks marketing, and marketing SMS needs consent that was granted (CNIL prior consent).
    """
    if suppression is not None:
        return Blocked(f"suppressed: {suppression.reason}", suppression.reason)
    if purpose == "transactional":
        return Allowed()
    if consent is not None and consent.status == "denied":
        return Blocked(f"{channel} marketing consent withdrawn", "consent")
    if channel == "sms" and (consent is None or consent.status != "granted"):
        return Blocked("no sms marketing consent", "consent")
    return Allowed()


def newer_consent(current: ConsentRecord | None, incoming: ConsentRecord) -> bool:
    """Last writer wins by the time the contact acted, so a late event cannot undo an objection
    that happened after it."""
    return current is None or incoming.at >= current.at


def suppression_for_bounce(*, suppress_now: bool, bounces: int) -> SuppressionReason | None:
    """Whether a bounce suppresses the address: at once for a mailbox that does not exist
    (5.1.1 / 5.2.1, provider opt-out), else once `bounces` (this one counted) reaches the limit.
    """
    if suppress_now:
        return "hard_bounce"
    if bounces >= REPEATED_BOUNCES_LIMIT:
        return "repeated_bounces"
    return None
