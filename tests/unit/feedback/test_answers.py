from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_feedback.domain.answers import Submission, answer_id, record
from relance_feedback.errors import InvalidAnswer

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def sub(choice: str | None = "satisfied", nps: int | None = None, comment: str | None = None):
    return Submission("shop", "o-1", "u-1", choice, nps, comment, "email", "m-1")  # type: ignore[arg-type]


def test_first_answer_is_stored_with_a_stable_id() -> None:
    out = record(None, sub("satisfied"), T0)
    assert out.changed and not out.alert
    assert out.answer.answer_id == answer_id("shop", "o-1", "u-1")
    assert out.answer.revision == 1
    assert out.answer.first_answered_at == T0 == out.answer.answered_at


def test_the_same_answer_twice_changes_nothing_and_alerts_once() -> None:
    first = record(None, sub("not_satisfied", comment="broken"), T0)
    again = record(first.answer, sub("not_satisfied", comment="broken"), T0 + timedelta(minutes=1))
    assert first.alert and not again.alert
    assert not again.changed
    assert again.answer == first.answer


def test_a_later_answer_replaces_the_earlier_one() -> None:
    first = record(None, sub("very_satisfied"), T0)
    later = record(first.answer, sub("not_satisfied", comment="late delivery"), T0 + timedelta(1))
    assert later.changed and later.alert
    assert later.answer.choice == "not_satisfied"
    assert later.answer.comment == "late delivery"
    assert later.answer.revision == 2
    assert later.answer.first_answered_at == T0
    assert later.answer.answered_at == T0 + timedelta(1)


def test_flipping_back_to_not_satisfied_does_not_alert_again() -> None:
    a = record(None, sub("not_satisfied"), T0)
    b = record(a.answer, sub("satisfied"), T0 + timedelta(hours=1))
    c = record(b.answer, sub("not_satisfied"), T0 + timedelta(hours=2))
    assert [a.alert, b.alert, c.alert] == [True, False, False]
    assert c.changed and c.answer.choice == "not_satisfied"


def test_nps_and_choice_are_kept_apart_and_a_missing_comment_keeps_the_old_one() -> None:
    a = record(None, sub("satisfied", comment="nice"), T0)
    b = record(a.answer, sub(None, nps=9), T0 + timedelta(1))
    assert b.answer.choice == "satisfied"
    assert b.answer.nps == 9
    assert b.answer.comment == "nice"
    assert not b.alert


def test_a_blank_comment_counts_as_no_comment() -> None:
    out = record(None, sub("satisfied", comment="   "), T0)
    assert out.answer.comment is None


@pytest.mark.parametrize(
    ("choice", "nps", "comment"),
    [(None, None, None), (None, 11, None), (None, -1, None), ("satisfied", None, "x" * 4001)],
)
def test_invalid_submissions_are_refused(choice: str | None, nps: int | None, comment: str | None):
    with pytest.raises(InvalidAnswer):
        sub(choice, nps, comment)


submissions = st.builds(
    lambda choice, nps, comment: (choice, nps, comment),
    st.sampled_from(["very_satisfied", "satisfied", "not_satisfied", None]),
    st.one_of(st.none(), st.integers(0, 10)),
    st.one_of(st.none(), st.sampled_from(["a", "b", "late"])),
).filter(lambda t: t[0] is not None or t[1] is not None)


@given(st.lists(submissions, min_size=1, max_size=12))
def test_at_most_one_alert_and_exactly_one_iff_ever_not_satisfied(seq: list[tuple]) -> None:
    answer = None
    alerts = 0
    revisions = 0
    for i, (choice, nps, comment) in enumerate(seq):
        out = record(answer, sub(choice, nps, comment), T0 + timedelta(minutes=i))
        alerts += out.alert
        revisions += out.changed
        answer = out.answer
        assert out.answer.revision == revisions
    assert answer is not None
    assert alerts == (1 if any(c == "not_satisfied" for c, _, _ in seq) else 0)
    assert answer.alerted == (alerts == 1)
    last_choice = next((c for c, _, _ in reversed(seq) if c is not None), None)
    assert answer.choice == last_choice
