"""What segmentation's use cases need from the outside world: contacts, profiles, shops.

Every store operation takes a connection already inside the caller's transaction, so the
inbox entry, the effect and the change events (outbox) commit together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from relance_events.envelope import TraceContext, deterministic_id
from relance_events.event import Event, new_event
from relance_events.payloads import (
    LifecycleStageChanged,
    LoyaltyTierChanged,
    Payload,
    RfmSegmentChanged,
)
from relance_runtime.db import Connection
from relance_segmentation.domain.aggregates import ContactAggregate, ContactProfile
from relance_segmentation.domain.rfm import RfmBoundaries

SOURCE = "segmentation"

SegmentPayload = LifecycleStageChanged | LoyaltyTierChanged | RfmSegmentChanged


@dataclass(frozen=True)
class OrderLine:
    """One order for the bulk import."""

    order_id: str
    contact_key: str
    ordered_at: datetime
    total: Decimal


@dataclass(frozen=True)
class RefundLine:
    refund_id: str
    contact_key: str
    refunded_at: datetime
    amount: Decimal
    order_id: str | None = None


@dataclass(frozen=True)
class SegmentChange:
    """One change of stage, tier or RFM segment. `cause` names what made it (an event id
    or a recompute instant), so its event id is the same however often it is rebuilt."""

    shop_id: str
    contact_key: str
    payload: SegmentPayload
    cause: str

    def event(self, trace: TraceContext | None = None) -> Event[Payload]:
        return new_event(
            self.payload,
            shop_id=self.shop_id,
            contact_key=self.contact_key,
            source=SOURCE,
            occurred_at=self.payload.as_of,
            event_id=deterministic_id(
                SOURCE, self.shop_id, self.contact_key, self.payload.TYPE, self.cause
            ),
            trace=trace,
        )


@dataclass(frozen=True)
class ImportResult:
    orders_inserted: int
    refunds_inserted: int
    contacts_updated: int


@dataclass(frozen=True)
class RecomputeResult:
    """`changes_recorded` changes wait for `recompute_changes` in this transaction."""

    contacts: int
    customers: int
    profiles_written: int
    changes_recorded: int
    average_basket: Decimal | None


@dataclass(frozen=True)
class ContactView:
    """What `GET /v1/contacts/{user_id}` shows."""

    aggregate: ContactAggregate
    profile: ContactProfile | None


@dataclass(frozen=True)
class ShopSummary:
    """What `GET /v1/segments/summary` shows."""

    per_stage: dict[str, int]
    per_tier: dict[str, int]
    per_segment: dict[str, int]
    average_basket: Decimal | None
    as_of: datetime | None
    boundaries: RfmBoundaries | None = field(default=None)


class ConnectionPool(Protocol):
    """Where use cases borrow the connection their transaction runs on."""

    def acquire(self) -> AbstractAsyncContextManager[Connection]: ...


class SegmentationReads(Protocol):
    """What the admin API reads."""

    async def contact(self, conn: Connection, shop_id: str, contact_key: str) -> ContactView | None:
        """The contact's aggregates and profile (None: never profiled); None if unknown."""
        ...

    async def summary(self, conn: Connection, shop_id: str) -> ShopSummary:
        """Profiles per stage, tier and segment, with the last recompute's figures."""
        ...


class SegmentationStore(SegmentationReads, Protocol):
    """Aggregates and scored profiles of every contact of every shop."""

    async def apply_event(
        self, conn: Connection, event: Event[Payload], now: datetime
    ) -> list[SegmentChange]:
        """Fold one event into its contact, score it against the shop's stored boundaries;
        returns the stage/tier/segment changes. An order id (or a refund event) seen before
        changes nothing; an alias first moves the previous contact's history in. Every
        applied event bumps the profile's revision."""
        ...

    async def import_orders(
        self,
        conn: Connection,
        shop_id: str,
        orders: Iterable[OrderLine],
        refunds: Iterable[RefundLine],
        now: datetime,
    ) -> ImportResult:
        """Load orders and refunds (known ids are skipped) and rebuild the aggregates of the
        contacts concerned from the ledger, bumping their revisions. Scores come with
        `recompute`."""
        ...

    async def shops(self, conn: Connection) -> dict[str, datetime | None]:
        """Every shop with a contact, with the instant of its last recompute."""
        ...

    async def last_recompute(self, conn: Connection, shop_id: str) -> datetime | None: ...

    async def shops_with_customers(self, conn: Connection, shops: Collection[str]) -> set[str]:
        """Those of `shops` whose last recompute found customers (they have boundaries)."""
        ...

    async def lock_recompute(self, conn: Connection, shop_id: str, *, wait: bool) -> bool:
        """Hold the shop's recompute lock until the transaction ends; without `wait`, False
        at once when another transaction holds it."""
        ...

    async def recompute(
        self, conn: Connection, shop_id: str, now: datetime, *, side: Connection | None = None
    ) -> RecomputeResult:
        """Re-score every contact of the shop as of `now`, write the profiles that changed
        unless an event touched them since they were read (revision), stage their changes
        for `recompute_changes`, refresh the shop's boundaries and figures. `side`: a
        second connection, outside this transaction, for a read that can run alongside."""
        ...

    def recompute_changes(
        self, conn: Connection, shop_id: str, now: datetime, batch: int = 5000
    ) -> AsyncIterator[list[SegmentChange]]:
        """The changes the last `recompute` of this transaction staged, in batches."""
        ...
