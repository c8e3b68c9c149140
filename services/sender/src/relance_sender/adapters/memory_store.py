"""An in-memory SenderStore for unit tests and the benchmark; same contract as PostgreSQL.

A transaction writes in place and keeps an undo log, replayed if it fails, so a failed use
case leaves nothing behind, like a rolled-back transaction (transactions run one at a time).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from relance_sender.domain.ledger import Channel, LedgerRow, Purpose
from relance_sender.domain.policy import ConsentRecord, Suppression, newer_consent
from relance_sender.ports import SendCheck


@dataclass
class _Tables:
    ledger: dict[str, LedgerRow] = field(default_factory=dict)
    suppressions: dict[tuple[str, str, str], Suppression] = field(default_factory=dict)
    soft_bounces: dict[tuple[str, str, str], int] = field(default_factory=dict)
    consents: dict[tuple[str, str, str, str], ConsentRecord] = field(default_factory=dict)


_MISSING: Any = object()


class MemoryTx:
    def __init__(self, tables: _Tables) -> None:
        self.t = tables
        self._undo: list[tuple[dict[Any, Any], Any, Any]] = []

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        self._undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    def _pop(self, table: dict[Any, Any], key: Any) -> None:
        if key in table:
            self._undo.append((table, key, table.pop(key)))

    def rollback(self) -> None:
        for table, key, old in reversed(self._undo):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        self._undo.clear()

    async def lock(self, message_id: str) -> LedgerRow | None:
        return self.t.ledger.get(message_id)

    async def insert(self, row: LedgerRow) -> bool:
        if row.message_id in self.t.ledger:
            return False
        self._set(self.t.ledger, row.message_id, row)
        return True

    async def save(self, row: LedgerRow) -> None:
        self._set(self.t.ledger, row.message_id, row)

    async def insert_many(self, rows: Sequence[LedgerRow]) -> set[str]:
        return {row.message_id for row in rows if await self.insert(row)}

    async def lock_many(self, message_ids: Sequence[str]) -> dict[str, LedgerRow]:
        return {i: self.t.ledger[i] for i in message_ids if i in self.t.ledger}

    async def save_many(self, rows: Sequence[LedgerRow]) -> None:
        for row in rows:
            await self.save(row)

    async def claim_due(self, now: datetime, limit: int) -> Sequence[LedgerRow]:
        due = [
            r
            for r in self.t.ledger.values()
            if r.state == "pending" and r.next_attempt_at is not None and r.next_attempt_at <= now
        ]
        due.sort(key=lambda r: (r.next_attempt_at or now, r.message_id))
        return due[:limit]

    async def interrupted(
        self, *, owner: str | None, lease_expired_before: datetime, limit: int
    ) -> Sequence[LedgerRow]:
        rows = [
            r
            for r in self.t.ledger.values()
            if r.state == "sending" and (r.owner == owner or r.updated_at < lease_expired_before)
        ]
        return sorted(rows, key=lambda r: r.message_id)[:limit]

    async def find_contacts(self, shop_id: str, channel: Channel, address: str) -> Sequence[str]:
        return sorted(
            {
                r.contact_key
                for r in self.t.ledger.values()
                if r.shop_id == shop_id and r.channel == channel and r.address == address
            }
        )

    async def suppression(self, shop_id: str, channel: Channel, address: str) -> Suppression | None:
        return self.t.suppressions.get((shop_id, channel, address))

    async def suppress(self, entry: Suppression) -> None:
        key = (entry.shop_id, entry.channel, entry.address)
        if key not in self.t.suppressions:
            self._set(self.t.suppressions, key, entry)

    async def unsuppress(self, shop_id: str, channel: Channel, address: str) -> None:
        self._pop(self.t.suppressions, (shop_id, channel, address))
        self._pop(self.t.soft_bounces, (shop_id, channel, address))

    async def count_soft_bounce(
        self, shop_id: str, channel: Channel, address: str, now: datetime
    ) -> int:
        key = (shop_id, channel, address)
        self._set(self.t.soft_bounces, key, self.t.soft_bounces.get(key, 0) + 1)
        return self.t.soft_bounces[key]

    async def consent(
        self, shop_id: str, contact_key: str, channel: Channel, purpose: Purpose
    ) -> ConsentRecord | None:
        return self.t.consents.get((shop_id, contact_key, channel, purpose))

    async def send_checks(
        self, shop_id: str, contact_key: str, channel: Channel, purpose: Purpose, address: str
    ) -> tuple[Suppression | None, ConsentRecord | None]:
        return (
            await self.suppression(shop_id, channel, address),
            await self.consent(shop_id, contact_key, channel, purpose),
        )

    async def send_checks_many(
        self, checks: Sequence[SendCheck]
    ) -> list[tuple[Suppression | None, ConsentRecord | None]]:
        return [
            await self.send_checks(c.shop_id, c.contact_key, c.channel, c.purpose, c.address)
            for c in checks
        ]

    async def record_consent(self, record: ConsentRecord) -> bool:
        key = (record.shop_id, record.contact_key, record.channel, record.purpose)
        if not newer_consent(self.t.consents.get(key), record):
            return False
        self._set(self.t.consents, key, record)
        return True


class MemorySenderStore:
    def __init__(self) -> None:
        self.tables = _Tables()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTx]:
        async with self._lock:
            tx = MemoryTx(self.tables)
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise

    async def save_claimed(self, row: LedgerRow, *, claimed: LedgerRow) -> bool:
        async with self._lock:
            current = self.tables.ledger.get(row.message_id)
            if (
                current is None
                or current.state != "sending"
                or current.owner != claimed.owner
                or current.attempts != claimed.attempts
            ):
                return False
            self.tables.ledger[row.message_id] = row
            return True

    def row(self, message_id: str) -> LedgerRow | None:
        return self.tables.ledger.get(message_id)
