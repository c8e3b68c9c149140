"""What the orchestrator's service layer needs from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol

from relance_events import Event
from relance_orchestrator.domain.commands import Command
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.state import ContactState
from relance_runtime.db import Connection


@dataclass(frozen=True, slots=True)
class DueTimer:
    shop_id: str
    contact_key: str
    key: str
    due_at: datetime
    attempts: int = 0


TrackedKind = Literal["sent", "opened", "clicked"]


class Tracked(NamedTuple):
    """A message's status or engagement, for the journal."""

    shop_id: str
    kind: TrackedKind
    message_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class TimerWrite:
    """What one of a contact's timers becomes: due at `due_at`, or gone when None."""

    shop_id: str
    contact_key: str
    key: str
    due_at: datetime | None


@dataclass(frozen=True, slots=True)
class UnreadableState:
    """A stored contact state that no longer loads (its timers fail, then park)."""

    error: str


@dataclass(frozen=True, slots=True)
class StepCounts:
    """One plan step's figures for `/v1/plans/stats`."""

    plan: str
    step: str
    requested: int = 0
    sent: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    revenue: Decimal = Decimal(0)
    held: int = 0
    dropped: int = 0
    skipped: int = 0


class ContactStore(Protocol):
    async def lock(self, conn: Connection, shop_id: str, contact_key: str) -> ContactState:
        """The contact's state, row-locked until the caller's transaction ends."""
        ...

    async def lock_existing(
        self, conn: Connection, shop_id: str, contact_key: str
    ) -> ContactState | None:
        """Same, or None when the contact has no state yet (nothing is created)."""
        ...

    async def lock_many(
        self, conn: Connection, contacts: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ContactState]:
        """`lock` for several contacts at once, in the order given (sort it: no deadlock)."""
        ...

    async def try_lock_many(
        self, conn: Connection, contacts: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ContactState | UnreadableState]:
        """Lock those not locked by someone else (SKIP LOCKED); the others are left out."""
        ...

    async def save_many(self, conn: Connection, states: Sequence[ContactState]) -> None:
        """Write back states this transaction holds locked (one statement)."""
        ...


class TimerStore(Protocol):
    async def claim_due(self, conn: Connection, now: datetime, limit: int) -> list[DueTimer]:
        """Due, pending timers (not parked, not waiting for a retry), row-locked."""
        ...

    async def delete(self, conn: Connection, timers: Sequence[DueTimer]) -> None: ...

    async def write(self, conn: Connection, writes: Sequence[TimerWrite]) -> None:
        """Create, move (back to pending) or delete timers; at most one write per timer."""
        ...

    async def failed(
        self, conn: Connection, timer: DueTimer, error: str, *, retry_at: datetime, park: bool
    ) -> None: ...

    async def parked(self, conn: Connection, shop_id: str) -> dict[str, int]: ...


class Journal(Protocol):
    async def record(
        self, conn: Connection, decisions: Sequence[tuple[ContactState, Sequence[Command]]]
    ) -> None:
        """Journal what each contact's decision produced (one statement)."""
        ...

    async def track(self, conn: Connection, tracked: Sequence[Tracked]) -> None:
        """Record that messages this orchestrator requested were sent / opened / clicked
        (once per message and kind; unknown message ids are ignored): one statement."""
        ...

    async def timer_parked(
        self, conn: Connection, timer: DueTimer, reason: str, at: datetime
    ) -> None: ...

    async def stats(
        self, conn: Connection, shop_id: str, since: datetime | None
    ) -> list[StepCounts]: ...


class Outbox(Protocol):
    """Same shape as `relance_runtime.outbox.Outbox`."""

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None: ...


class SeenOrder(NamedTuple):
    shop_id: str
    order_id: str
    total: Decimal
    at: datetime


class ShopDirectory(Protocol):
    async def shop_facts(self, conn: Connection, shop_id: str, now: datetime) -> ShopFacts:
        """The shop's timezone and average basket (cached by implementations)."""
        ...

    async def orders_seen(self, conn: Connection, orders: Sequence[SeenOrder]) -> None:
        """Orders the orchestrator applies (its own average basket fallback); an order
        seen before is ignored."""
        ...
