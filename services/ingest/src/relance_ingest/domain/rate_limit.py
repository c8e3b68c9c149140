"""Token buckets per write key (pure: the caller passes monotonic `now` in seconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    bucket: Bucket
    retry_after_s: int


def take(bucket: Bucket | None, cost: float, now: float, *, rate: float, burst: float) -> Decision:
    """Refill at `rate` per second up to `burst`, then spend `cost` if there is enough."""
    cost = min(cost, burst)  # a call bigger than the burst must still pass when full
    if bucket is None:
        bucket = Bucket(tokens=burst, at=now)
    tokens = min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate)
    if tokens >= cost:
        return Decision(True, Bucket(tokens - cost, now), 0)
    missing = cost - tokens
    return Decision(False, Bucket(tokens, now), max(1, math.ceil(missing / rate)))


class RateLimiter:
    """Buckets keyed by write-key digest; the number of keys is bounded by configured keys."""

    def __init__(self, *, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, Bucket] = {}

    def take(self, key: str, cost: float, now: float) -> Decision:
        decision = take(self._buckets.get(key), cost, now, rate=self._rate, burst=self._burst)
        self._buckets[key] = decision.bucket
        return decision
