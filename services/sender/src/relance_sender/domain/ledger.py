"""The send ledger as a pure state machine: one row per message id.

pending -> sending -> sent | failed | ambiguous, with `sending -> pending` for a temporary
refusal (retry later) and for a transactional message found `sending` after a crash.
The row is claimed (`sending`) and committed *before* the provider is called, so a crash
after the provider accepted leaves `sending`, never a silent resend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal, assert_never

from relance_sender.domain.outcome import (
    Accepted,
    Ambiguous,
    Deferred,
    DeliveryOutcome,
    Rejected,
    RetryPolicy,
)
from relance_sender.errors import IllegalTransition

SendState = Literal["pending", "sending", "sent", "failed", "ambiguous"]
LedgerEvent = Literal["claim", "accepted", "rejected", "deferred", "broken", "blocked", "recovered"]
Channel = Literal["email", "sms"]
Purpose = Literal["marketing", "transactional"]

TERMINAL: Final[frozenset[SendState]] = frozenset({"sent", "failed", "ambiguous"})

# Every allowed transition; anything else raises and changes nothing.
TRANSITIONS: Final[dict[tuple[SendState, LedgerEvent], frozenset[SendState]]] = {
    ("pending", "claim"): frozenset({"sending"}),
    ("pending", "blocked"): frozenset({"failed"}),
    ("sending", "accepted"): frozenset({"sent"}),
    ("sending", "rejected"): frozenset({"failed"}),
    ("sending", "deferred"): frozenset({"pending", "failed"}),
    ("sending", "broken"): frozenset({"ambiguous"}),
    ("sending", "blocked"): frozenset({"failed"}),
    ("sending", "recovered"): frozenset({"ambiguous", "pending"}),
}


@dataclass(frozen=True, slots=True)
class LedgerRow:
    message_id: str
    shop_id: str
    contact_key: str
    channel: Channel
    purpose: Purpose
    plan: str | None
    step: str | None
    state: SendState
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    owner: str | None = None
    address: str | None = None
    provider_message_id: str | None = None
    last_error: str | None = None
    request: dict[str, Any] | None = None


def new_row(
    *,
    message_id: str,
    shop_id: str,
    contact_key: str,
    channel: Channel,
    purpose: Purpose,
    plan: str | None,
    step: str | None,
    now: datetime,
    request: dict[str, Any] | None = None,
) -> LedgerRow:
    return LedgerRow(
        message_id=message_id,
        shop_id=shop_id,
        contact_key=contact_key,
        channel=channel,
        purpose=purpose,
        plan=plan,
        step=step,
        state="pending",
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
        request=request,
    )


def _move(row: LedgerRow, event: LedgerEvent, target: SendState) -> SendState:
    allowed = TRANSITIONS.get((row.state, event))
    if allowed is None or target not in allowed:
        raise IllegalTransition(f"{row.message_id}: {event} not allowed from {row.state}")
    return target


def claim(row: LedgerRow, *, now: datetime, owner: str, address: str) -> LedgerRow:
    """About to call the provider: must be committed before the call."""
    state = _move(row, "claim", "sending")
    return replace(
        row,
        state=state,
        attempts=row.attempts + 1,
        first_attempt_at=row.first_attempt_at or now,
        next_attempt_at=None,
        owner=owner,
        address=address,
        updated_at=now,
    )


def block(row: LedgerRow, *, reason: str, now: datetime) -> LedgerRow:
    """No send at all: no consent, suppressed, unrenderable, expired."""
    state = _move(row, "blocked", "failed")
    return replace(row, state=state, last_error=reason, next_attempt_at=None, updated_at=now)


def settle(
    row: LedgerRow, outcome: DeliveryOutcome, *, now: datetime, retry: RetryPolicy
) -> LedgerRow:
    """Record what the provider said about the attempt the row was claimed for."""
    match outcome:
        case Accepted(provider_message_id=provider_id):
            state = _move(row, "accepted", "sent")
            return replace(
                row,
                state=state,
                provider_message_id=provider_id,
                last_error=None,
                owner=None,
                updated_at=now,
            )
        case Rejected(reason=reason):
            state = _move(row, "rejected", "failed")
            return replace(row, state=state, last_error=reason, owner=None, updated_at=now)
        case Deferred(reason=reason, retry_after_s=retry_after_s):
            at = retry.next_attempt_at(
                first_attempt_at=row.first_attempt_at or now,
                attempts=row.attempts,
                now=now,
                retry_after_s=retry_after_s,
            )
            if at is None:
                state = _move(row, "deferred", "failed")
                return replace(
                    row,
                    state=state,
                    last_error=f"gave up after {row.attempts} attempts: {reason}",
                    owner=None,
                    updated_at=now,
                )
            state = _move(row, "deferred", "pending")
            return replace(
                row, state=state, next_attempt_at=at, last_error=reason, owner=None, updated_at=now
            )
        case Ambiguous(reason=reason):
            state = _move(row, "broken", "ambiguous")
            return replace(row, state=state, last_error=reason, owner=None, updated_at=now)
        case _:
            assert_never(outcome)


def recover(row: LedgerRow, *, now: datetime) -> LedgerRow:
    """A row left `sending` by a dead process: the provider may have the message.

    Marketing is never sent twice, so it becomes `ambiguous`. Transactional mail matters
    more than a duplicate: it goes back to `pending` and is resent with the same Message-ID,
    which lets receiving systems fold the copies.
    """
    if row.purpose == "marketing":
        state = _move(row, "recovered", "ambiguous")
        return replace(
            row,
            state=state,
            last_error="interrupted after the provider call started; not resent",
            owner=None,
            updated_at=now,
        )
    state = _move(row, "recovered", "pending")
    return replace(
        row,
        state=state,
        next_attempt_at=now,
        last_error="interrupted after the provider call started; resending",
        owner=None,
        updated_at=now,
    )


def note_undelivered(row: LedgerRow, *, reason: str, now: datetime) -> LedgerRow:
    """A delivery report said the provider could not deliver what it accepted: the send
    stays what it was (the provider had it), the reason is kept (and repeats spotted)."""
    if row.state not in ("sent", "ambiguous"):
        raise IllegalTransition(f"{row.message_id}: a delivery report for a {row.state} send")
    return replace(row, last_error=reason, updated_at=now)


def is_due(row: LedgerRow, now: datetime) -> bool:
    return row.state == "pending" and (row.next_attempt_at is None or row.next_attempt_at <= now)
