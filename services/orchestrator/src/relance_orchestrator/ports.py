"""What the orchestrator's service layer needs from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

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

    async def try_lock_many(
        self, conn: Connection, contacts: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ContactState | UnreadableState]:
        """Lock those not locked by someone else (SKIP LOCKED); the others are left out."""
        ...

    async def save(self, conn: Connection, state: ContactState) -> None: ...


class TimerStore(Protocol):
    async def claim_due(self, conn: Connection, now: datetime, limit: int) -> list[DueTimer]:
        """Due, pending timers (not parked, not waiting for a retry), row-locked."""
        ...

    async def delete(self, conn: Connection, timers: Sequence[DueTimer]) -> None: ...

    async def apply(
        self, conn: Connection, shop_id: str, contact_key: str, commands: Sequence[Command]
    ) -> None:
        """Carry out ScheduleWakeup / CancelWakeups for one contact."""
        ...

    async def failed(
        self, conn: Connection, timer: DueTimer, error: str, *, retry_at: datetime, park: bool
    ) -> None: ...

    async def parked(self, conn: Connection, shop_id: str) -> dict[str, int]: ...


class Journal(Protocol):
    async def record(
        self, conn: Connection, state: ContactState, commands: Sequence[Command]
    ) -> None: ...

    async def track(
        self, conn: Connection, shop_id: str, kind: TrackedKind, message_id: str, at: datetime
    ) -> None: ...

    async def timer_parked(
        self, conn: Connection, timer: DueTimer, reason: str, at: datetime
    ) -> None: ...

    async def stats(
        self, conn: Connection, shop_id: str, since: datetime | None
    ) -> list[StepCounts]: ...


class Outbox(Protocol):
    """Same shape as `relance_runtime.outbox.Outbox`."""

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None: ...


class ShopDirectory(Protocol):
    async def shop_facts(self, conn: Connection, shop_id: str, now: datetime) -> ShopFacts:
        """The shop's timezone and average basket (cached by implementations)."""
        ...

    async def order_seen(
        self, conn: Connection, shop_id: str, order_id: str, total: Decimal, at: datetime
    ) -> None:
        """An order the orchestrator applied (its own average basket fallback)."""
        ...
