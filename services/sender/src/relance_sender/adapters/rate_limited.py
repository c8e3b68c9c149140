"""Per-channel and per-provider rate limits around a transport (token buckets)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from relance_runtime.clock import Clock
from relance_sender.domain.outcome import DeliveryOutcome
from relance_sender.domain.rate_limit import TokenBucket
from relance_sender.email_message import BuiltEmail
from relance_sender.ports import EmailTransport, OutgoingSms, SmsTransport


class RateLimiter:
    """Sleeps as long as the bucket says; reservations queue callers fairly."""

    def __init__(self, *, name: str, rate_per_s: float, burst: float, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        self._bucket = TokenBucket.full(rate_per_s=rate_per_s, capacity=burst, now=clock.now())

    async def acquire(self) -> float:
        self._bucket, wait = self._bucket.take(self._clock.now())
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


async def _acquire_all(limiters: Sequence[RateLimiter]) -> None:
    for limiter in limiters:
        await limiter.acquire()


class RateLimitedEmailTransport:
    def __init__(self, inner: EmailTransport, limiters: Sequence[RateLimiter]) -> None:
        self.name = inner.name
        self._inner = inner
        self._limiters = tuple(limiters)

    async def send(self, email: BuiltEmail) -> DeliveryOutcome:
        await _acquire_all(self._limiters)
        return await self._inner.send(email)

    async def close(self) -> None:
        await self._inner.close()


class RateLimitedSmsTransport:
    def __init__(self, inner: SmsTransport, limiters: Sequence[RateLimiter]) -> None:
        self.name = inner.name
        self._inner = inner
        self._limiters = tuple(limiters)

    async def send(self, sms: OutgoingSms) -> DeliveryOutcome:
        await _acquire_all(self._limiters)
        return await self._inner.send(sms)

    async def close(self) -> None:
        await self._inner.close()
