from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_sender.domain.keywords import keyword_intent
from relance_sender.domain.policy import (
    Allowed,
    Blocked,
    ConsentRecord,
    Suppression,
    may_send,
    suppression_for_bounce,
)
from relance_sender.domain.rate_limit import TokenBucket

from .conftest import NOW


def consent(status: str, channel: str = "email") -> ConsentRecord:
    return ConsentRecord("s", "c", channel, "marketing", status, NOW)  # type: ignore[arg-type]


def test_objection_blocks_marketing_but_not_transactional() -> None:
    denied = consent("denied")
    assert isinstance(
        may_send(channel="email", purpose="marketing", suppression=None, consent=denied), Blocked
    )
    assert isinstance(
        may_send(channel="email", purpose="transactional", suppression=None, consent=denied),
        Allowed,
    )


def test_marketing_email_under_soft_opt_in_needs_no_record() -> None:
    assert isinstance(
        may_send(channel="email", purpose="marketing", suppression=None, consent=None), Allowed
    )


def test_marketing_sms_needs_granted_consent() -> None:
    assert isinstance(
        may_send(channel="sms", purpose="marketing", suppression=None, consent=None), Blocked
    )
    granted = consent("granted", "sms")
    assert isinstance(
        may_send(channel="sms", purpose="marketing", suppression=None, consent=granted), Allowed
    )


def test_a_suppressed_address_blocks_every_purpose() -> None:
    entry = Suppression("s", "email", "x@example.org", "hard_bounce", NOW)
    for purpose in ("marketing", "transactional"):
        decision = may_send(channel="email", purpose=purpose, suppression=entry, consent=None)  # type: ignore[arg-type]
        assert isinstance(decision, Blocked) and "hard_bounce" in decision.reason


def test_repeated_bounces_suppress_on_the_third() -> None:
    assert suppression_for_bounce(suppress_now=False, bounces=2) is None
    assert suppression_for_bounce(suppress_now=False, bounces=3) == "repeated_bounces"
    assert suppression_for_bounce(suppress_now=True, bounces=0) == "hard_bounce"


@pytest.mark.parametrize(
    "body",
    ["STOP", " stop ", "Arrêt", "ARRET", "arret", "Unsubscribe", "end", "QUIT", "stopall",
     "REVOKE", "optout", "Cancel", "STOP SMS", "stop."],
)  # fmt: skip
def test_opt_out_keywords(body: str) -> None:
    assert keyword_intent(body) == "objection"


@pytest.mark.parametrize("body", ["START", " unstop ", "Start"])
def test_opt_in_keywords(body: str) -> None:
    assert keyword_intent(body) == "resubscription"


@pytest.mark.parametrize("body", ["merci", "please stop sending me this", "STOPPED", ""])
def test_other_replies_are_not_keywords(body: str) -> None:
    assert keyword_intent(body) is None


def test_bucket_allows_a_burst_then_spaces_calls() -> None:
    bucket = TokenBucket.full(rate_per_s=10, capacity=2, now=NOW)
    waits = []
    for _ in range(4):
        bucket, wait = bucket.take(NOW)
        waits.append(round(wait, 6))
    assert waits == [0.0, 0.0, 0.1, 0.2]
    bucket, wait = bucket.take(NOW + timedelta(seconds=1))
    assert wait == 0.0


@given(
    rate=st.floats(min_value=0.5, max_value=1000),
    capacity=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=60),
)
def test_bucket_never_lets_more_through_than_rate_allows(
    rate: float, capacity: int, gaps: list[float]
) -> None:
    bucket = TokenBucket.full(rate_per_s=rate, capacity=capacity, now=NOW)
    at = NOW
    for gap in gaps:
        at += timedelta(seconds=gap)
        bucket, wait = bucket.take(at)
    # Every reserved call happens at at + wait; n calls within a span need span*rate + capacity.
    span = (at - NOW).total_seconds() + wait
    assert len(gaps) <= span * rate + capacity + 1e-6
