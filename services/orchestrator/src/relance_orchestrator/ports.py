"""What the orchestrator's service layer needs from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from relance_events import Event
from relance_orchestrator.domain.commands import Command
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.state import ContactState


@dataclass(frozen=True, slots=True)
class DueTimer:
    shop_id: str
    contact_key: str
    key: str
    due_at: datetime


class ContactStore(Protocol):
    async def lock(self, conn: asyncpg.Connection, shop_id: str, contact_key: str) -> ContactState:
        """The contact's state, row-locked until the caller's transaction ends."""
        ...

    async def try_lock_many(
        self, conn: asyncpg.Connection, contacts: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ContactState]:
        """Lock those not locked by someone else (SKIP LOCKED); the others are left out."""
        ...

    async def save(self, conn: asyncpg.Connection, state: ContactState) -> None: ...


class TimerStore(Protocol):
    async def claim_due(
        self, conn: asyncpg.Connection, now: datetime, limit: int
    ) -> list[DueTimer]: ...

    async def delete(self, conn: asyncpg.Connection, timers: Sequence[DueTimer]) -> None: ...

    async def apply(
        self, conn: asyncpg.Connection, shop_id: str, contact_key: str, commands: Sequence[Command]
    ) -> None:
        """Carry out ScheduleWakeup / CancelWakeups for one contact."""
        ...


class Journal(Protocol):
    async def record(
        self, conn: asyncpg.Connection, state: ContactState, commands: Sequence[Command]
    ) -> None: ...


class Outbox(Protocol):
    """Same shape as `relance_runtime.outbox.Outbox`."""

    async def add(self, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> None: ...


class ShopDirectory(Protocol):
    def shop_facts(self, shop_id: str) -> ShopFacts: ...
