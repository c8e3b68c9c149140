"""An in-memory SegmentationStore for unit tests; same contract as PostgreSQL, not fast.

Connections are accepted and ignored, and there are no transactions: writes land at once
(a use case that fails halfway keeps them), and `lock_recompute` always grants the lock
(one process, one writer). `after_diff` runs where a PostgreSQL recompute lets other
transactions in (between its diff and its writes), so tests can race events against it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import cast

from relance_events.event import Event
from relance_events.payloads import ContactTraits, OrderCompleted, OrderRefunded, Payload
from relance_runtime.db import Connection
from relance_segmentation.domain.aggregates import (
    RELEVANT_TYPES,
    ContactAggregate,
    ContactProfile,
    OpenCart,
    alias_sources,
    apply,
    changes,
    merge,
    profile_of,
)
from relance_segmentation.domain.lifecycle import LifecycleConfig
from relance_segmentation.domain.rfm import RfmBoundaries, boundaries
from relance_segmentation.ports import (
    ContactView,
    ImportResult,
    OrderLine,
    RecomputeResult,
    RefundLine,
    SegmentChange,
    SegmentPayload,
    ShopSummary,
)

_BASKET_PLACES = Decimal("0.0001")


class _StandIn:
    """Where a connection is expected: its transactions do nothing."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


MEMORY_CONNECTION = cast(Connection, _StandIn())


class MemoryPool:
    """A `ConnectionPool` for use cases over the in-memory store."""

    @asynccontextmanager
    async def _borrow(self) -> AsyncIterator[Connection]:
        yield MEMORY_CONNECTION

    def acquire(self) -> AbstractAsyncContextManager[Connection]:
        return self._borrow()


@dataclass(frozen=True)
class _Contact:
    id: int
    aggregate: ContactAggregate


@dataclass(frozen=True)
class _Profile:
    shop_id: str
    revision: int
    profile: ContactProfile
    profiled_at: datetime


@dataclass(frozen=True)
class _Order:
    contact_key: str
    ordered_at: datetime
    total: Decimal


@dataclass(frozen=True)
class _Refund:
    contact_key: str
    refunded_at: datetime
    amount: Decimal
    order_id: str | None


@dataclass(frozen=True)
class _ShopStats:
    as_of: datetime
    customers: int
    contacts: int
    average_basket: Decimal | None
    boundaries: RfmBoundaries | None


@dataclass(frozen=True)
class _Staged:
    """A recompute's diff row: `revision` None for a contact without a profile."""

    contact_id: int
    contact_key: str
    revision: int | None
    before: ContactProfile | None
    after: ContactProfile


def _utc(at: datetime | None) -> datetime | None:
    return None if at is None else at.astimezone(UTC)


def _as_stored(agg: ContactAggregate) -> ContactAggregate:
    """The aggregate as the database gives it back: traits and carts through their JSON
    columns (traits equal to their defaults are not kept), instants in UTC."""
    return replace(
        agg,
        traits=ContactTraits.model_validate_json(agg.traits.model_dump_json(exclude_defaults=True)),
        consent=json.loads(json.dumps(agg.consent)),
        first_order_at=_utc(agg.first_order_at),
        last_order_at=_utc(agg.last_order_at),
        open_carts={
            k: OpenCart(
                cart_id=k,
                total=Decimal(str(c.total)),
                currency=c.currency,
                items=c.items,
                updated_at=c.updated_at.astimezone(UTC),
            )
            for k, c in agg.open_carts.items()
        },
        last_email_open_at=_utc(agg.last_email_open_at),
        last_email_click_at=_utc(agg.last_email_click_at),
        updated_at=_utc(agg.updated_at),
    )


class MemorySegmentationStore:
    """Aggregates and scored profiles of every contact of every shop, in dicts."""

    def __init__(
        self,
        config: LifecycleConfig,
        basket_window_days: int = 365,
        *,
        after_diff: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._config = config
        self._basket_window_days = basket_window_days
        self.after_diff = after_diff
        self._contacts: dict[tuple[str, str], _Contact] = {}
        self._profiles: dict[int, _Profile] = {}
        self._orders: dict[tuple[str, str], _Order] = {}
        self._refunds: dict[tuple[str, str], _Refund] = {}
        self._stats: dict[str, _ShopStats] = {}
        self._staged: dict[str, list[_Staged]] = {}
        self._last_id = 0

    # --- per event ---------------------------------------------------------------------

    async def apply_event(
        self, conn: Connection, event: Event[Payload], now: datetime
    ) -> list[SegmentChange]:
        if event.type not in RELEVANT_TYPES:
            return []
        shop, key, p = event.shop_id, event.contact_key, event.payload
        if isinstance(p, OrderCompleted):
            if (shop, p.order_id) in self._orders:
                return []
            self._orders[shop, p.order_id] = _Order(key, event.occurred_at, p.total)
        elif isinstance(p, OrderRefunded):
            refund_id = str(event.event_id)
            if (shop, refund_id) in self._refunds:
                return []
            self._refunds[shop, refund_id] = _Refund(key, event.occurred_at, p.amount, p.order_id)
        bounds = self._bounds(shop)
        contact = self._contacts.get((shop, key)) or self._create(shop, key, now)
        stored = self._profiles.get(contact.id)
        before = None if stored is None else stored.profile
        agg = contact.aggregate
        sources = alias_sources(event)
        if sources:
            agg = self._absorb(agg, sources, now)
        agg = apply(agg, event, now)
        after = profile_of(agg, bounds, self._config, now)
        self._contacts[shop, key] = _Contact(contact.id, _as_stored(agg))
        if stored is None:
            self._profiles[contact.id] = _Profile(shop, 1, after, now)
        else:
            profiled_at = now if after != before else stored.profiled_at
            self._profiles[contact.id] = _Profile(shop, stored.revision + 1, after, profiled_at)
        if after == before:
            return []
        return [
            SegmentChange(shop, key, cast(SegmentPayload, c), f"event:{event.event_id}")
            for c in changes(before, after, now)
        ]

    def _create(self, shop: str, key: str, now: datetime) -> _Contact:
        self._last_id += 1
        contact = _Contact(
            self._last_id, ContactAggregate(shop_id=shop, contact_key=key, updated_at=_utc(now))
        )
        self._contacts[shop, key] = contact
        return contact

    def _absorb(
        self, known: ContactAggregate, sources: Sequence[str], now: datetime
    ) -> ContactAggregate:
        shop = known.shop_id
        found = sorted(k for k in sources if (shop, k) in self._contacts)
        merged = known
        for k in found:
            gone = self._contacts.pop((shop, k))
            self._profiles.pop(gone.id, None)
            merged = merge(merged, gone.aggregate, now)
        for at, order in self._orders.items():
            if at[0] == shop and order.contact_key in found:
                self._orders[at] = replace(order, contact_key=known.contact_key)
        for at, refund in self._refunds.items():
            if at[0] == shop and refund.contact_key in found:
                self._refunds[at] = replace(refund, contact_key=known.contact_key)
        return merged

    # --- bulk --------------------------------------------------------------------------

    async def import_orders(
        self,
        conn: Connection,
        shop_id: str,
        orders: Iterable[OrderLine],
        refunds: Iterable[RefundLine],
        now: datetime,
    ) -> ImportResult:
        new_orders: list[str] = []
        for o in orders:
            if (shop_id, o.order_id) not in self._orders:
                self._orders[shop_id, o.order_id] = _Order(o.contact_key, o.ordered_at, o.total)
                new_orders.append(o.contact_key)
        new_refunds: list[str] = []
        for r in refunds:
            if (shop_id, r.refund_id) not in self._refunds:
                self._refunds[shop_id, r.refund_id] = _Refund(
                    r.contact_key, r.refunded_at, r.amount, r.order_id
                )
                new_refunds.append(r.contact_key)
        affected = sorted({*new_orders, *new_refunds})
        for key in affected:
            self._rebuild(shop_id, key, now)
        return ImportResult(len(new_orders), len(new_refunds), len(affected))

    def _rebuild(self, shop: str, key: str, now: datetime) -> None:
        """The contact's order figures from the ledger; its profile's revision bumped."""
        mine = sorted(
            (o.ordered_at, order_id, o.total)
            for (s, order_id), o in self._orders.items()
            if s == shop and o.contact_key == key
        )
        refunded = sum(
            (r.amount for (s, _), r in self._refunds.items() if s == shop and r.contact_key == key),
            Decimal(0),
        )
        contact = self._contacts.get((shop, key)) or self._create(shop, key, now)
        agg = replace(
            contact.aggregate,
            orders_count=len(mine),
            gross=sum((total for _, _, total in mine), Decimal(0)),
            refunded=refunded,
            first_order_at=mine[0][0] if mine else None,
            last_order_at=mine[-1][0] if mine else None,
            last_order_total=mine[-1][2] if mine else None,
            updated_at=now,
        )
        self._contacts[shop, key] = _Contact(contact.id, _as_stored(agg))
        stored = self._profiles.get(contact.id)
        if stored is not None:
            self._profiles[contact.id] = replace(stored, revision=stored.revision + 1)

    # --- scheduled recompute -----------------------------------------------------------

    async def shops(self, conn: Connection) -> dict[str, datetime | None]:
        return {
            shop: None if shop not in self._stats else self._stats[shop].as_of
            for shop, _ in self._contacts
        }

    async def last_recompute(self, conn: Connection, shop_id: str) -> datetime | None:
        stats = self._stats.get(shop_id)
        return None if stats is None else stats.as_of

    async def shops_with_customers(self, conn: Connection, shops: Collection[str]) -> set[str]:
        return {s for s in shops if s in self._stats and self._stats[s].customers > 0}

    async def lock_recompute(self, conn: Connection, shop_id: str, *, wait: bool) -> bool:
        return True

    async def recompute(
        self, conn: Connection, shop_id: str, now: datetime, *, side: Connection | None = None
    ) -> RecomputeResult:
        contacts = sorted(
            (c for (s, _), c in self._contacts.items() if s == shop_id), key=lambda c: c.id
        )
        values = {c.id: v for c in contacts if (v := c.aggregate.rfm_values(now)) is not None}
        bounds = boundaries(values) if values else None
        staged: list[_Staged] = []
        for c in contacts:
            after = profile_of(c.aggregate, bounds, self._config, now)
            stored = self._profiles.get(c.id)
            if stored is None:
                staged.append(_Staged(c.id, c.aggregate.contact_key, None, None, after))
            elif stored.profile != after:
                staged.append(
                    _Staged(c.id, c.aggregate.contact_key, stored.revision, stored.profile, after)
                )
        live = {c.id for c in contacts}
        gone = [i for i, p in self._profiles.items() if p.shop_id == shop_id and i not in live]
        if self.after_diff is not None:
            await self.after_diff()
        written: list[_Staged] = []
        for row in staged:
            stored = self._profiles.get(row.contact_id)
            if row.revision is None and stored is None:
                self._profiles[row.contact_id] = _Profile(shop_id, 0, row.after, now)
            elif (
                row.revision is not None and stored is not None and stored.revision == row.revision
            ):
                self._profiles[row.contact_id] = replace(stored, profile=row.after, profiled_at=now)
            else:
                continue  # an event wrote this profile after the diff: it stays
            written.append(row)
        for i in gone:
            self._profiles.pop(i, None)
        self._staged[shop_id] = written
        basket = self._average_basket(shop_id, now)
        self._stats[shop_id] = _ShopStats(now, len(values), len(contacts), basket, bounds)
        return RecomputeResult(
            contacts=len(contacts),
            customers=len(values),
            profiles_written=len(written),
            changes_recorded=sum(len(changes(r.before, r.after, now)) for r in written),
            average_basket=basket,
        )

    def _average_basket(self, shop_id: str, now: datetime) -> Decimal | None:
        since = now - timedelta(days=self._basket_window_days)
        totals = [
            o.total
            for (s, _), o in self._orders.items()
            if s == shop_id and since < o.ordered_at <= now
        ]
        if not totals:
            return None
        mean = sum(totals, Decimal(0)) / len(totals)
        return mean.quantize(_BASKET_PLACES, rounding=ROUND_HALF_UP)

    async def recompute_changes(
        self, conn: Connection, shop_id: str, now: datetime, batch: int = 5000
    ) -> AsyncIterator[list[SegmentChange]]:
        cause = f"recompute:{now.isoformat()}"
        chunk: list[SegmentChange] = []
        for row in self._staged.get(shop_id, []):
            chunk.extend(
                SegmentChange(shop_id, row.contact_key, cast(SegmentPayload, p), cause)
                for p in changes(row.before, row.after, now)
            )
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _bounds(self, shop_id: str) -> RfmBoundaries | None:
        stats = self._stats.get(shop_id)
        return None if stats is None or not stats.customers else stats.boundaries

    # --- reads -------------------------------------------------------------------------

    async def contact(self, conn: Connection, shop_id: str, contact_key: str) -> ContactView | None:
        found = self._contacts.get((shop_id, contact_key))
        if found is None:
            return None
        stored = self._profiles.get(found.id)
        return ContactView(found.aggregate, None if stored is None else stored.profile)

    async def summary(self, conn: Connection, shop_id: str) -> ShopSummary:
        per: dict[str, dict[str, int]] = {"stage": {}, "tier": {}, "segment": {}}
        for stored in self._profiles.values():
            if stored.shop_id != shop_id:
                continue
            p = stored.profile
            for dim, name in (("stage", p.stage), ("tier", p.tier), ("segment", p.segment)):
                if name is not None:
                    per[dim][name] = per[dim].get(name, 0) + 1
        stats = self._stats.get(shop_id)
        return ShopSummary(
            per_stage=per["stage"],
            per_tier=per["tier"],
            per_segment=per["segment"],
            average_basket=None if stats is None else stats.average_basket,
            as_of=None if stats is None else stats.as_of,
            boundaries=self._bounds(shop_id),
        )
