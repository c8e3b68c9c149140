from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relance_events.payloads import LEAVE_REASONS
from relance_feedback.domain.leave_reasons import (
    ReasonCount,
    ReasonSubmission,
    leave_reason_id,
    record_reason,
    summarise,
)
from relance_feedback.errors import InvalidLeaveReason
from relance_feedback.http import REASON_LABELS

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def sub(reason: str = "too_expensive", comment: str | None = None) -> ReasonSubmission:
    return ReasonSubmission("shop", "u-1", "m-1", "anti_churn", "reminder_1", reason, comment)  # type: ignore[arg-type]


def test_the_list_is_short_fixed_and_every_reason_has_a_page_label() -> None:
    assert LEAVE_REASONS == (
        "too_expensive",
        "found_elsewhere",
        "no_longer_needed",
        "bad_experience",
        "too_many_emails",
        "other",
    )
    assert tuple(REASON_LABELS) == LEAVE_REASONS


def test_a_first_reason_is_stored_with_a_stable_id_per_message() -> None:
    out = record_reason(None, sub(comment="  "), T0)
    assert out.changed
    assert out.record.reason_id == leave_reason_id("shop", "m-1")
    assert (out.record.reason, out.record.comment, out.record.revision) == (
        "too_expensive",
        None,
        1,
    )
    assert out.record.first_given_at == T0 == out.record.given_at


def test_the_same_click_twice_changes_nothing() -> None:
    first = record_reason(None, sub(comment="cheaper at X"), T0)
    again = record_reason(first.record, sub(), T0 + timedelta(minutes=1))
    assert not again.changed and again.record == first.record


def test_another_reason_for_the_same_message_replaces_the_first() -> None:
    first = record_reason(None, sub(comment="cheaper at X"), T0)
    later = record_reason(first.record, sub("found_elsewhere"), T0 + timedelta(hours=1))
    assert later.changed
    assert (later.record.reason, later.record.comment, later.record.revision) == (
        "found_elsewhere",
        "cheaper at X",
        2,
    )
    assert later.record.first_given_at == T0
    assert later.record.given_at == T0 + timedelta(hours=1)


@pytest.mark.parametrize(("reason", "comment"), [("bored", None), ("other", "x" * 4001)])
def test_unknown_reasons_and_long_comments_are_refused(reason: str, comment: str | None) -> None:
    with pytest.raises(InvalidLeaveReason):
        sub(reason, comment)


def test_summaries_list_every_reason_in_total_and_per_step() -> None:
    summary = summarise(
        [
            ReasonCount("anti_churn", "reminder_2", "too_expensive", 2),
            ReasonCount("anti_churn", "reminder_1", "too_expensive", 1),
            ReasonCount("anti_churn", "reminder_1", "other", 3),
            ReasonCount("anti_churn", "reminder_1", "retired_reason", 5),  # type: ignore[arg-type]
        ]
    )
    assert list(summary.reasons) == list(LEAVE_REASONS)
    assert summary.reasons["too_expensive"] == 3 and summary.reasons["other"] == 3
    assert summary.total == 6
    assert [(s.plan, s.step, s.total) for s in summary.by_step] == [
        ("anti_churn", "reminder_1", 4),
        ("anti_churn", "reminder_2", 2),
    ]
    assert summarise([]).total == 0 and summarise([]).by_step == ()
