"""A token bucket, pure: the caller passes `now` and sleeps for the wait it is told."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TokenBucket:
    rate_per_s: float
    capacity: float
    tokens: float
    updated_at: datetime

    @classmethod
    def full(cls, *, rate_per_s: float, capacity: float, now: datetime) -> TokenBucket:
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError("a bucket needs a positive rate and a capacity of at least 1")
        return cls(rate_per_s=rate_per_s, capacity=capacity, tokens=capacity, updated_at=now)

    def refilled(self, now: datetime) -> TokenBucket:
        elapsed = max((now - self.updated_at).total_seconds(), 0.0)
        tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        return replace(self, tokens=tokens, updated_at=max(now, self.updated_at))

    def take(self, now: datetime, cost: float = 1.0) -> tuple[TokenBucket, float]:
        """Reserve `cost` tokens; returns the new bucket and how long to wait before acting.

        The tokens are reserved even when a wait is needed (the balance goes negative), so
        concurrent callers queue up behind each other instead of all waking at once.
        """
        bucket = self.refilled(now)
        left = bucket.tokens - cost
        wait = 0.0 if left >= 0 else -left / self.rate_per_s
        return replace(bucket, tokens=left), wait
