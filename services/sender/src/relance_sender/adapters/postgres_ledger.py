"""The send ledger, suppression list and consent table in PostgreSQL.

`PostgresSenderTx` works on a connection already inside a transaction (so the lead can run
the consumer inbox and the effect together); `PostgresSenderStore` opens one per use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from relance_sender.domain.ledger import Channel, LedgerRow, Purpose
from relance_sender.domain.policy import ConsentRecord, Suppression

_COLUMNS: Final = (
    "message_id, shop_id, contact_key, channel, purpose, plan, step, state, attempts, "
    "created_at, updated_at, first_attempt_at, next_attempt_at, owner, address, "
    "provider_message_id, last_error, request"
)


def _row(record: asyncpg.Record) -> LedgerRow:
    request = record["request"]
    return LedgerRow(
        message_id=record["message_id"],
        shop_id=record["shop_id"],
        contact_key=record["contact_key"],
        channel=record["channel"],
        purpose=record["purpose"],
        plan=record["plan"],
        step=record["step"],
        state=record["state"],
        attempts=record["attempts"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        first_attempt_at=record["first_attempt_at"],
        next_attempt_at=record["next_attempt_at"],
        owner=record["owner"],
        address=record["address"],
        provider_message_id=record["provider_message_id"],
        last_error=record["last_error"],
        request=orjson.loads(request) if request is not None else None,
    )


def _values(row: LedgerRow) -> tuple[Any, ...]:
    return (
        row.message_id,
        row.shop_id,
        row.contact_key,
        row.channel,
        row.purpose,
        row.plan,
        row.step,
        row.state,
        row.attempts,
        row.created_at,
        row.updated_at,
        row.first_attempt_at,
        row.next_attempt_at,
        row.owner,
        row.address,
        row.provider_message_id,
        row.last_error,
        orjson.dumps(row.request).decode() if row.request is not None else None,
    )


_SAVE: Final = (
    "UPDATE sender_ledger SET state=$2, attempts=$3, updated_at=$4, first_attempt_at=$5,"
    " next_attempt_at=$6, owner=$7, address=$8, provider_message_id=$9, last_error=$10"
    " WHERE message_id=$1"
)


def _save_args(row: LedgerRow) -> tuple[Any, ...]:
    return (
        row.message_id,
        row.state,
        row.attempts,
        row.updated_at,
        row.first_attempt_at,
        row.next_attempt_at,
        row.owner,
        row.address,
        row.provider_message_id,
        row.last_error,
    )


class PostgresSenderTx:
    def __init__(self, conn: asyncpg.Connection | PoolConnectionProxy) -> None:
        self._conn = conn

    async def lock(self, message_id: str) -> LedgerRow | None:
        record = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM sender_ledger WHERE message_id = $1 FOR UPDATE", message_id
        )
        return _row(record) if record is not None else None

    async def insert(self, row: LedgerRow) -> bool:
        status = await self._conn.execute(
            f"INSERT INTO sender_ledger ({_COLUMNS}) VALUES "
            "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18::jsonb) "
            "ON CONFLICT (message_id) DO NOTHING",
            *_values(row),
        )
        return bool(status.endswith(" 1"))

    async def save(self, row: LedgerRow) -> None:
        await self._conn.execute(_SAVE, *_save_args(row))

    async def claim_due(self, now: datetime, limit: int) -> Sequence[LedgerRow]:
        records = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM sender_ledger WHERE state = 'pending'"
            " AND next_attempt_at <= $1 ORDER BY next_attempt_at, message_id LIMIT $2"
            " FOR UPDATE SKIP LOCKED",
            now,
            limit,
        )
        return [_row(r) for r in records]

    async def interrupted(
        self, *, owner: str | None, lease_expired_before: datetime, limit: int
    ) -> Sequence[LedgerRow]:
        records = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM sender_ledger WHERE state = 'sending'"
            " AND (owner = $1 OR updated_at < $2) ORDER BY message_id LIMIT $3"
            " FOR UPDATE SKIP LOCKED",
            owner,
            lease_expired_before,
            limit,
        )
        return [_row(r) for r in records]

    async def find_contacts(self, shop_id: str, channel: Channel, address: str) -> Sequence[str]:
        records = await self._conn.fetch(
            "SELECT DISTINCT contact_key FROM sender_ledger"
            " WHERE shop_id = $1 AND channel = $2 AND address = $3 ORDER BY contact_key",
            shop_id,
            channel,
            address,
        )
        return [r["contact_key"] for r in records]

    async def suppression(self, shop_id: str, channel: Channel, address: str) -> Suppression | None:
        record = await self._conn.fetchrow(
            "SELECT reason, at FROM sender_suppressions"
            " WHERE shop_id = $1 AND channel = $2 AND address = $3",
            shop_id,
            channel,
            address,
        )
        if record is None:
            return None
        return Suppression(shop_id, channel, address, record["reason"], record["at"])

    async def suppress(self, entry: Suppression) -> None:
        await self._conn.execute(
            "INSERT INTO sender_suppressions (shop_id, channel, address, reason, at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            entry.shop_id,
            entry.channel,
            entry.address,
            entry.reason,
            entry.at,
        )

    async def unsuppress(self, shop_id: str, channel: Channel, address: str) -> None:
        for table in ("sender_suppressions", "sender_soft_bounces"):
            await self._conn.execute(
                f"DELETE FROM {table} WHERE shop_id = $1 AND channel = $2 AND address = $3",
                shop_id,
                channel,
                address,
            )

    async def count_soft_bounce(
        self, shop_id: str, channel: Channel, address: str, now: datetime
    ) -> int:
        count: int = await self._conn.fetchval(
            "INSERT INTO sender_soft_bounces (shop_id, channel, address, count, last_at)"
            " VALUES ($1, $2, $3, 1, $4) ON CONFLICT (shop_id, channel, address)"
            " DO UPDATE SET count = sender_soft_bounces.count + 1, last_at = EXCLUDED.last_at"
            " RETURNING count",
            shop_id,
            channel,
            address,
            now,
        )
        return count

    async def consent(
        self, shop_id: str, contact_key: str, channel: Channel, purpose: Purpose
    ) -> ConsentRecord | None:
        record = await self._conn.fetchrow(
            "SELECT status, at FROM sender_consents WHERE shop_id = $1 AND contact_key = $2"
            " AND channel = $3 AND purpose = $4",
            shop_id,
            contact_key,
            channel,
            purpose,
        )
        if record is None:
            return None
        return ConsentRecord(shop_id, contact_key, channel, purpose, record["status"], record["at"])

    async def send_checks(
        self, shop_id: str, contact_key: str, channel: Channel, purpose: Purpose, address: str
    ) -> tuple[Suppression | None, ConsentRecord | None]:
        record = await self._conn.fetchrow(
            "SELECT s.reason, s.at AS suppressed_at, c.status, c.at AS consent_at"
            " FROM (VALUES (1)) AS one (x)"
            " LEFT JOIN sender_suppressions s"
            "  ON s.shop_id = $1 AND s.channel = $2 AND s.address = $3"
            " LEFT JOIN sender_consents c"
            "  ON c.shop_id = $1 AND c.contact_key = $4 AND c.channel = $2 AND c.purpose = $5",
            shop_id,
            channel,
            address,
            contact_key,
            purpose,
        )
        assert record is not None  # the VALUES row is always there
        suppression = consent = None
        if record["reason"] is not None:
            suppression = Suppression(
                shop_id, channel, address, record["reason"], record["suppressed_at"]
            )
        if record["status"] is not None:
            consent = ConsentRecord(
                shop_id, contact_key, channel, purpose, record["status"], record["consent_at"]
            )
        return suppression, consent

    async def record_consent(self, record: ConsentRecord) -> bool:
        # Last writer wins by the time the contact acted (see policy.newer_consent).
        status = await self._conn.execute(
            "INSERT INTO sender_consents (shop_id, contact_key, channel, purpose, status, at)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (shop_id, contact_key, channel, purpose) DO UPDATE"
            " SET status = EXCLUDED.status, at = EXCLUDED.at"
            " WHERE sender_consents.at <= EXCLUDED.at",
            record.shop_id,
            record.contact_key,
            record.channel,
            record.purpose,
            record.status,
            record.at,
        )
        return bool(status.endswith(" 1"))


class PostgresSenderStore:
    """Opens a transaction on a pooled connection per use."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresSenderTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresSenderTx(conn)

    async def save_claimed(self, row: LedgerRow, *, claimed: LedgerRow) -> bool:
        # One statement, no BEGIN/COMMIT round trips: the guard is the row's own claim.
        status = await self._pool.execute(
            _SAVE + " AND state = 'sending' AND owner = $11 AND attempts = $12",
            *_save_args(row),
            claimed.owner,
            claimed.attempts,
        )
        return bool(status == "UPDATE 1")
