"""Survey answers: one per (shop, order, contact), replaced by later answers.

Rules (the whole of them):
- An answer is identified by (shop, order, contact); its id is derived from those three, so
  the same answer arriving twice (email confirm POSTed twice, API retried) is one answer.
- A submission carries a satisfaction choice, an NPS score (0-10), or both. Each kind it
  carries replaces the earlier value of that kind; a kind it does not carry is kept.
  A comment replaces the earlier comment; a submission without a comment keeps it.
- A submission that changes nothing is a no-op: no new revision, no event, no alert.
- The support alert fires the first time the answer's choice becomes `not_satisfied`, and
  only then: at most one alert per (shop, order, contact), ever. Going back to `satisfied`
  and then to `not_satisfied` again does not alert a second time (support already has the
  case); `alerted` is remembered on the answer for that reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from relance_events import deterministic_id
from relance_events.payloads import SurveyAnswer
from relance_feedback.errors import InvalidAnswer

AnswerOrigin = Literal["email", "api"]
COMMENT_MAX_CHARS = 4000


def answer_id(shop_id: str, order_id: str, contact_key: str) -> uuid.UUID:
    """The stable id of the answer of one contact about one order."""
    return deterministic_id("feedback.answer", shop_id, order_id, contact_key)


@dataclass(frozen=True, slots=True)
class Submission:
    """What a contact (or the shop's own survey tool) just said."""

    shop_id: str
    order_id: str
    contact_key: str
    choice: SurveyAnswer | None
    nps: int | None
    comment: str | None
    origin: AnswerOrigin
    message_id: str | None = None

    def __post_init__(self) -> None:
        if self.choice is None and self.nps is None:
            raise InvalidAnswer("an answer needs a choice or an NPS score")
        if self.nps is not None and not 0 <= self.nps <= 10:
            raise InvalidAnswer("an NPS score is between 0 and 10")
        if self.comment is not None and len(self.comment) > COMMENT_MAX_CHARS:
            raise InvalidAnswer(f"a comment is at most {COMMENT_MAX_CHARS} characters")


@dataclass(frozen=True, slots=True)
class Answer:
    """The current state of one (shop, order, contact) answer."""

    answer_id: uuid.UUID
    shop_id: str
    order_id: str
    contact_key: str
    choice: SurveyAnswer | None
    nps: int | None
    comment: str | None
    origin: AnswerOrigin
    message_id: str | None
    first_answered_at: datetime
    answered_at: datetime
    revision: int
    alerted: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome of a submission: the answer to store, and what follows from it."""

    answer: Answer
    changed: bool
    alert: bool


def _clean_comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    stripped = comment.strip()
    return stripped or None


def record(previous: Answer | None, submission: Submission, now: datetime) -> Recorded:
    """Apply a submission to the stored answer (None when there is none yet)."""
    comment = _clean_comment(submission.comment)
    if previous is None:
        answer = Answer(
            answer_id=answer_id(submission.shop_id, submission.order_id, submission.contact_key),
            shop_id=submission.shop_id,
            order_id=submission.order_id,
            contact_key=submission.contact_key,
            choice=submission.choice,
            nps=submission.nps,
            comment=comment,
            origin=submission.origin,
            message_id=submission.message_id,
            first_answered_at=now,
            answered_at=now,
            revision=1,
            alerted=submission.choice == "not_satisfied",
        )
        return Recorded(answer, changed=True, alert=answer.alerted)

    choice = submission.choice if submission.choice is not None else previous.choice
    nps = submission.nps if submission.nps is not None else previous.nps
    new_comment = comment if comment is not None else previous.comment
    if (choice, nps, new_comment) == (previous.choice, previous.nps, previous.comment):
        return Recorded(previous, changed=False, alert=False)
    alert = choice == "not_satisfied" and not previous.alerted
    answer = replace(
        previous,
        choice=choice,
        nps=nps,
        comment=new_comment,
        origin=submission.origin,
        message_id=submission.message_id or previous.message_id,
        answered_at=now,
        revision=previous.revision + 1,
        alerted=previous.alerted or alert,
    )
    return Recorded(answer, changed=True, alert=alert)
