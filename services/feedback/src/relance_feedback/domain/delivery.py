"""The webhook delivery policy: what an attempt's outcome means for the alert.

Schedule (Standard Webhooks example): attempt 1 immediately, then each retry waits, after
the previous attempt failed: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h. That is
10 attempts over about 3 days. Each wait gets up to +`jitter` of itself added (never
subtracted, so a wait is never shorter than the schedule says), drawn from a generator
seeded by (seed, attempt): the same alert always gets the same jitter, tests need no sleep.

- Only a 2xx is a success. A 3xx is a failure (redirects are never followed).
- 410 Gone disables the endpoint; the alert is kept as failed.
- On 429, 502, 503 and 504 a `Retry-After` (seconds or HTTP date) is honoured: the next
  attempt waits at least that long (capped at `max_retry_after`), or the scheduled wait if
  it is longer.
- After the last attempt the alert is kept as `failed`, never dropped.
- Without a support endpoint (the embedded default) alerts go to a local JSON-lines file;
  a completed write counts as delivered, a failed one is retried like a network failure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal, assert_never

STANDARD_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})

TransportFailureKind = Literal[
    "timeout", "connect", "refused_destination", "protocol", "no_endpoint", "write"
]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """`schedule[0]` is the wait before attempt 1; `schedule[n]` the wait before attempt n+1."""

    schedule: tuple[timedelta, ...] = STANDARD_SCHEDULE
    jitter: float = 0.1
    max_retry_after: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("a schedule has at least one attempt")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter is a fraction between 0 and 1")

    @property
    def max_attempts(self) -> int:
        return len(self.schedule)


@dataclass(frozen=True, slots=True)
class HttpReply:
    """The endpoint answered; only the status and `Retry-After` matter (never the body)."""

    status: int
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """No HTTP status: timeout, refused connection, SSRF refusal, broken protocol."""

    kind: TransportFailureKind


@dataclass(frozen=True, slots=True)
class Written:
    """The alert was appended to the local alert file (no support endpoint configured)."""


AttemptOutcome = HttpReply | TransportFailure | Written


@dataclass(frozen=True, slots=True)
class Delivered:
    """`status` is the HTTP status, None for a local write."""

    status: int | None


@dataclass(frozen=True, slots=True)
class RetryAt:
    at: datetime
    reason: str = field(default="")


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The alert stays, as failed; `disable_endpoint` when the endpoint said 410."""

    reason: str
    disable_endpoint: bool = False


Decision = Delivered | RetryAt | GaveUp


def jittered(wait: timedelta, *, seed: str, attempt: int, jitter: float) -> timedelta:
    """`wait` plus a deterministic share of up to `jitter` of it."""
    if wait <= timedelta(0) or jitter == 0.0:
        return wait
    draw = random.Random(f"{seed}:{attempt}").random()
    return wait + wait * (jitter * draw)


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """`Retry-After` as delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - now, timedelta(0))


def _describe(outcome: AttemptOutcome) -> str:
    match outcome:
        case HttpReply(status=status):
            return f"http {status}"
        case TransportFailure(kind=kind):
            return kind
        case Written():
            return "written"
        case _:
            assert_never(outcome)


def decide(
    outcome: AttemptOutcome,
    *,
    attempt: int,
    now: datetime,
    policy: DeliveryPolicy,
    seed: str,
) -> Decision:
    """What to do after attempt number `attempt` (1-based) ended with `outcome` at `now`."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    if isinstance(outcome, Written):
        return Delivered(None)
    if isinstance(outcome, HttpReply):
        if 200 <= outcome.status < 300:
            return Delivered(outcome.status)
        if outcome.status == 410:
            return GaveUp("endpoint gone (http 410)", disable_endpoint=True)
    reason = _describe(outcome)
    if attempt >= policy.max_attempts:
        return GaveUp(f"{reason} on the last attempt ({attempt})")
    wait = jittered(policy.schedule[attempt], seed=seed, attempt=attempt, jitter=policy.jitter)
    if isinstance(outcome, HttpReply) and outcome.status in RETRY_AFTER_STATUSES:
        asked = parse_retry_after(outcome.retry_after, now)
        if asked is not None:
            wait = max(wait, min(asked, policy.max_retry_after))
    return RetryAt(now + wait, reason)
