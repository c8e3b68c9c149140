"""Leave reasons: why a contact stopped buying, one per anti-churn message.

Rules (the whole of them):
- A reason is identified by (shop, message): each anti-churn email asks once, so confirming
  the same link twice, or two links of the same email, is one reason, never two rows.
- The latest confirmed click wins: a contact who picks another reason of the same email
  replaces the first one (a revision is counted). A comment replaces the earlier comment; a
  submission without a comment keeps it. A submission that changes nothing is a no-op.
- A reason is only recorded: `too_many_emails` does not unsubscribe anyone (the email's own
  unsubscribe link does that).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from relance_events import deterministic_id
from relance_events.payloads import LEAVE_REASONS, LeaveReason
from relance_feedback.domain.answers import COMMENT_MAX_CHARS
from relance_feedback.errors import InvalidLeaveReason


def leave_reason_id(shop_id: str, message_id: str) -> uuid.UUID:
    """The stable id of the reason given in answer to one message."""
    return deterministic_id("feedback.leave_reason", shop_id, message_id)


@dataclass(frozen=True, slots=True)
class ReasonSubmission:
    """A confirmed click on a leave-reason link (the claims of its token, and a comment)."""

    shop_id: str
    contact_key: str
    message_id: str
    plan: str
    step: str
    reason: LeaveReason
    comment: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in LEAVE_REASONS:
            raise InvalidLeaveReason(f"unknown leave reason {self.reason!r}")
        if self.comment is not None and len(self.comment) > COMMENT_MAX_CHARS:
            raise InvalidLeaveReason(f"a comment is at most {COMMENT_MAX_CHARS} characters")


@dataclass(frozen=True, slots=True)
class LeaveReasonRecord:
    """The current reason given in answer to one (shop, message)."""

    reason_id: uuid.UUID
    shop_id: str
    message_id: str
    contact_key: str
    plan: str
    step: str
    reason: LeaveReason
    comment: str | None
    first_given_at: datetime
    given_at: datetime
    revision: int


@dataclass(frozen=True, slots=True)
class ReasonRecorded:
    record: LeaveReasonRecord
    changed: bool


def record_reason(
    previous: LeaveReasonRecord | None, submission: ReasonSubmission, now: datetime
) -> ReasonRecorded:
    """Apply a submission to the stored reason (None when there is none yet)."""
    comment = (submission.comment or "").strip() or None
    if previous is None:
        return ReasonRecorded(
            LeaveReasonRecord(
                reason_id=leave_reason_id(submission.shop_id, submission.message_id),
                shop_id=submission.shop_id,
                message_id=submission.message_id,
                contact_key=submission.contact_key,
                plan=submission.plan,
                step=submission.step,
                reason=submission.reason,
                comment=comment,
                first_given_at=now,
                given_at=now,
                revision=1,
            ),
            changed=True,
        )
    new_comment = comment if comment is not None else previous.comment
    if (submission.reason, new_comment) == (previous.reason, previous.comment):
        return ReasonRecorded(previous, changed=False)
    return ReasonRecorded(
        replace(
            previous,
            reason=submission.reason,
            comment=new_comment,
            given_at=now,
            revision=previous.revision + 1,
        ),
        changed=True,
    )


@dataclass(frozen=True, slots=True)
class ReasonCount:
    """How many contacts gave `reason` in answer to (plan, step), in a window."""

    plan: str
    step: str
    reason: LeaveReason
    count: int


@dataclass(frozen=True, slots=True)
class StepReasons:
    plan: str
    step: str
    reasons: dict[LeaveReason, int]

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


@dataclass(frozen=True, slots=True)
class ReasonSummary:
    """Every reason (0 when nobody gave it), in total and per (plan, step)."""

    reasons: dict[LeaveReason, int]
    by_step: tuple[StepReasons, ...]

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


def summarise(counts: Iterable[ReasonCount]) -> ReasonSummary:
    """Fold counts into totals; every known reason is listed, in the order of LEAVE_REASONS."""
    totals: dict[LeaveReason, int] = dict.fromkeys(LEAVE_REASONS, 0)
    steps: dict[tuple[str, str], dict[LeaveReason, int]] = {}
    for row in counts:
        if row.reason not in totals:  # a reason this build no longer offers
            continue
        totals[row.reason] += row.count
        step = steps.setdefault((row.plan, row.step), dict.fromkeys(LEAVE_REASONS, 0))
        step[row.reason] += row.count
    by_step = tuple(StepReasons(plan, step, steps[(plan, step)]) for plan, step in sorted(steps))
    return ReasonSummary(totals, by_step)
