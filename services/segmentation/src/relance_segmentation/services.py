"""Use cases: fold consumed events into contacts, recompute shops on a schedule.

Every change of stage, tier or RFM segment leaves through the platform outbox in the
transaction that made it, so it is published exactly once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from relance_events.event import Event
from relance_events.payloads import OrderCompleted, Payload
from relance_runtime.clock import Clock
from relance_runtime.consumer import Delivery
from relance_runtime.inbox import claim_new
from relance_runtime.outbox import Outbox
from relance_runtime.telemetry import current_trace_context, event_span
from relance_segmentation.ports import ConnectionPool, RecomputeResult, SegmentationStore

log = logging.getLogger(__name__)

CONSUMER = "segmentation"


@dataclass(frozen=True)
class ShopRecompute:
    shop_id: str
    as_of: datetime
    result: RecomputeResult


class SegmentationService:
    """The consumer's batch handler and the scheduled recompute of every shop."""

    def __init__(
        self,
        repo: SegmentationStore,
        pool: ConnectionPool,
        outbox: Outbox,
        clock: Clock,
        *,
        recompute_interval: timedelta = timedelta(days=1),
        check_every_s: float = 60.0,
    ) -> None:
        self.repo = repo
        self._repo = repo
        self._pool = pool
        self._outbox = outbox
        self._clock = clock
        self._interval = recompute_interval
        self._check_every_s = min(check_every_s, recompute_interval.total_seconds())
        self._scored_shops: set[str] = set()
        self._urgent: set[str] = set()
        self._wake = asyncio.Event()

    # --- consumer ----------------------------------------------------------------------

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Apply a batch in one transaction with the inbox; stage the changes it made."""
        now = self._clock.now()
        unscored: set[str] = set()
        async with self._pool.acquire() as conn, conn.transaction():
            new = await claim_new(conn, CONSUMER, [d.event.event_id for d in deliveries])
            produced: list[Event[Payload]] = []
            buying: set[str] = set()
            for d in deliveries:
                event = d.event
                if event.event_id not in new:
                    continue
                with event_span("segmentation.apply", event):
                    found = await self._repo.apply_event(conn, event, now)
                    if found:
                        trace = current_trace_context()
                        produced.extend(c.event(trace) for c in found)
                if isinstance(event.payload, OrderCompleted):
                    buying.add(event.shop_id)
            await self._outbox.add(conn, produced)
            if buying - self._scored_shops:
                scored = await self._repo.shops_with_customers(conn, buying - self._scored_shops)
                self._scored_shops |= scored
                unscored = buying - self._scored_shops
        if unscored:
            # A shop without boundaries cannot give RFM segments: score it now, not tomorrow.
            self._urgent |= unscored
            self._wake.set()

    # --- scheduled recompute -----------------------------------------------------------

    def _due(self, shop_id: str, last: datetime | None, now: datetime) -> bool:
        if last is None:
            return True
        return last <= now - self._interval or (shop_id in self._urgent and last < now)

    async def recompute_due(self, now: datetime) -> list[ShopRecompute]:
        """Recompute every shop not recomputed within the interval (or waiting for its
        first boundaries) as of `now`; shops another instance is on are skipped."""
        async with self._pool.acquire() as conn:
            shops = await self._repo.shops(conn)
        done = []
        for shop_id, last in sorted(shops.items()):
            if not self._due(shop_id, last, now):
                continue
            result = await self.recompute_shop(shop_id, now)
            if result is not None:
                done.append(ShopRecompute(shop_id, now, result))
        return done

    async def recompute_shop(
        self, shop_id: str, now: datetime, *, force: bool = False
    ) -> RecomputeResult | None:
        """One shop, if no other instance holds it and it is still due; None when skipped.
        `force` waits for another instance's recompute to end, then recomputes anyway."""
        # a second connection reads the average basket while the first scores contacts
        async with (
            self._pool.acquire() as conn,
            self._pool.acquire() as side,
            conn.transaction(),
        ):
            if not await self._repo.lock_recompute(conn, shop_id, wait=force):
                return None
            if not force and not self._due(
                shop_id, await self._repo.last_recompute(conn, shop_id), now
            ):
                return None
            result = await self._repo.recompute(conn, shop_id, now, side=side)
            trace = current_trace_context()
            async for chunk in self._repo.recompute_changes(conn, shop_id, now):
                await self._outbox.add(conn, [c.event(trace) for c in chunk])
        self._urgent.discard(shop_id)
        log.info(
            "shop recomputed",
            extra={
                "shop_id": shop_id,
                "as_of": now.isoformat(),
                "contacts": result.contacts,
                "customers": result.customers,
                "profiles_written": result.profiles_written,
                "changes": result.changes_recorded,
            },
        )
        return result

    async def run_schedule(self) -> None:
        """Background task: check for due shops every `check_every_s`, or at once when a
        shop needs its first boundaries."""
        while True:
            self._wake.clear()
            try:
                await self.recompute_due(self._clock.now())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("scheduled recompute failed, will retry", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._check_every_s)
