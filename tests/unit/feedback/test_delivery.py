from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_feedback.domain.delivery import (
    STANDARD_SCHEDULE,
    Delivered,
    DeliveryPolicy,
    GaveUp,
    HttpReply,
    RetryAt,
    TransportFailure,
    Written,
    decide,
    jittered,
    parse_retry_after,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EXACT = DeliveryPolicy(jitter=0.0)


def test_the_schedule_is_the_standard_webhooks_one() -> None:
    assert [int(d.total_seconds()) for d in STANDARD_SCHEDULE] == [
        0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400,
    ]  # fmt: skip
    assert DeliveryPolicy().max_attempts == 10


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_only_2xx_is_success(status: int) -> None:
    assert decide(HttpReply(status), attempt=1, now=NOW, policy=EXACT, seed="s") == Delivered(
        status
    )


@pytest.mark.parametrize("status", [100, 301, 302, 307, 308, 400, 401, 404, 500])
def test_everything_else_retries_on_schedule(status: int) -> None:
    decision = decide(HttpReply(status), attempt=1, now=NOW, policy=EXACT, seed="s")
    assert decision == RetryAt(NOW + timedelta(seconds=5), f"http {status}")


def test_each_retry_waits_the_next_step_of_the_schedule() -> None:
    for attempt in range(1, 10):
        decision = decide(HttpReply(500), attempt=attempt, now=NOW, policy=EXACT, seed="s")
        assert isinstance(decision, RetryAt)
        assert decision.at - NOW == STANDARD_SCHEDULE[attempt]


def test_after_the_last_attempt_the_alert_is_failed_not_dropped() -> None:
    decision = decide(HttpReply(503), attempt=10, now=NOW, policy=EXACT, seed="s")
    assert isinstance(decision, GaveUp)
    assert not decision.disable_endpoint
    assert "last attempt" in decision.reason


def test_410_disables_the_endpoint_at_once() -> None:
    decision = decide(HttpReply(410), attempt=1, now=NOW, policy=EXACT, seed="s")
    assert decision == GaveUp("endpoint gone (http 410)", disable_endpoint=True)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retry_after_is_honoured_when_longer_than_the_schedule(status: int) -> None:
    decision = decide(HttpReply(status, "120"), attempt=1, now=NOW, policy=EXACT, seed="s")
    assert decision == RetryAt(NOW + timedelta(seconds=120), f"http {status}")


def test_retry_after_never_shortens_the_schedule_and_is_capped() -> None:
    short = decide(HttpReply(429, "1"), attempt=2, now=NOW, policy=EXACT, seed="s")
    assert isinstance(short, RetryAt) and short.at == NOW + timedelta(minutes=5)
    huge = decide(HttpReply(503, "9999999"), attempt=1, now=NOW, policy=EXACT, seed="s")
    assert isinstance(huge, RetryAt) and huge.at == NOW + timedelta(hours=24)


def test_retry_after_is_ignored_on_500() -> None:
    decision = decide(HttpReply(500, "600"), attempt=1, now=NOW, policy=EXACT, seed="s")
    assert isinstance(decision, RetryAt) and decision.at == NOW + timedelta(seconds=5)


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Sat, 01 Mar 2025 12:10:00 GMT", NOW) == timedelta(minutes=10)
    assert parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", NOW) == timedelta(0)
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


@pytest.mark.parametrize(
    "kind", ["timeout", "connect", "refused_destination", "protocol", "no_endpoint", "write"]
)
def test_transport_failures_retry(kind: str) -> None:
    decision = decide(TransportFailure(kind), attempt=1, now=NOW, policy=EXACT, seed="s")  # type: ignore[arg-type]
    assert decision == RetryAt(NOW + timedelta(seconds=5), kind)


@given(st.text(max_size=20), st.integers(1, 9), st.floats(0.0, 1.0))
def test_jitter_is_deterministic_and_bounded(seed: str, attempt: int, jitter: float) -> None:
    wait = STANDARD_SCHEDULE[attempt]
    one = jittered(wait, seed=seed, attempt=attempt, jitter=jitter)
    two = jittered(wait, seed=seed, attempt=attempt, jitter=jitter)
    assert one == two
    assert wait <= one <= wait * (1 + jitter)


def test_jitter_spreads_alerts_apart() -> None:
    wait = timedelta(minutes=30)
    spread = {jittered(wait, seed=f"msg_{i}", attempt=3, jitter=0.1) for i in range(50)}
    assert len(spread) > 40


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        decide(HttpReply(500), attempt=0, now=NOW, policy=EXACT, seed="s")


@pytest.mark.parametrize("attempt", [1, 10])
def test_a_local_write_is_delivered_without_a_status(attempt: int) -> None:
    assert decide(Written(), attempt=attempt, now=NOW, policy=EXACT, seed="s") == Delivered(None)


def test_a_failed_local_write_ends_failed_after_the_last_attempt() -> None:
    decision = decide(TransportFailure("write"), attempt=10, now=NOW, policy=EXACT, seed="s")
    assert isinstance(decision, GaveUp) and not decision.disable_endpoint
