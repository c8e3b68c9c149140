from __future__ import annotations

from datetime import timedelta

import pytest

from relance_sender.domain.outcome import (
    Accepted,
    Ambiguous,
    Deferred,
    Rejected,
    RetryPolicy,
    classify_smtp_reply,
    classify_twilio_error,
    enhanced_status,
)

from .conftest import NOW


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (250, "2.0.0 Ok: queued as ABC", Accepted),
        (421, "4.7.28 rate limited", Deferred),
        (451, "4.3.0 try later", Deferred),
        (452, "4.2.2 mailbox full", Deferred),
        (550, "5.7.1 policy", Rejected),
    ],
)
def test_smtp_replies_map_to_outcomes(code: int, text: str, expected: type) -> None:
    assert isinstance(classify_smtp_reply(code, text), expected)


@pytest.mark.parametrize("text", ["5.1.1 no such user", "5.2.1 account disabled"])
def test_missing_mailbox_is_a_hard_bounce_that_suppresses(text: str) -> None:
    outcome = classify_smtp_reply(550, text)
    assert isinstance(outcome, Rejected)
    assert (outcome.bounce, outcome.suppress) == ("hard", True)


def test_other_permanent_refusals_do_not_suppress_at_once() -> None:
    outcome = classify_smtp_reply(552, "5.2.2 mailbox full")
    assert isinstance(outcome, Rejected)
    assert (outcome.bounce, outcome.suppress) == ("soft", False)


def test_enhanced_status_is_read_from_the_reply_text() -> None:
    assert enhanced_status("5.1.1 <x@y>: Recipient address rejected") == "5.1.1"
    assert enhanced_status("Recipient rejected") is None


def test_twilio_codes() -> None:
    opted_out = classify_twilio_error(400, 21610, "unsubscribed recipient")
    assert isinstance(opted_out, Rejected) and opted_out.suppress
    assert isinstance(classify_twilio_error(429, 20429, "too many"), Deferred)
    assert isinstance(classify_twilio_error(500, None, "oops"), Ambiguous)
    assert isinstance(classify_twilio_error(400, 21602, "body required"), Rejected)


def test_retry_backoff_grows_is_capped_and_respects_retry_after() -> None:
    policy = RetryPolicy(
        initial=timedelta(minutes=30), maximum=timedelta(hours=2), horizon=timedelta(days=4)
    )
    delays = [
        policy.next_attempt_at(first_attempt_at=NOW, attempts=n, now=NOW) for n in (1, 2, 3, 4)
    ]
    assert [d - NOW for d in delays if d] == [
        timedelta(minutes=30),
        timedelta(hours=1),
        timedelta(hours=2),
        timedelta(hours=2),
    ]
    later = policy.next_attempt_at(first_attempt_at=NOW, attempts=1, now=NOW, retry_after_s=7200)
    assert later == NOW + timedelta(hours=2)
    assert (
        policy.next_attempt_at(
            first_attempt_at=NOW, attempts=9, now=NOW + timedelta(days=3, hours=23)
        )
        is None
    )
