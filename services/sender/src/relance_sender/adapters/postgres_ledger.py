"""The send ledger, suppression list and consent table in PostgreSQL.

`PostgresSenderTx` works on a connection already inside a transaction (so the lead can run
the consumer inbox and the effect together); `PostgresSenderStore` opens one per use.
Batches of rows go in one statement each (`unnest` of one array per column), and the
settles of concurrent sends are group-committed (`SettleWriter`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from relance_sender.domain.ledger import Channel, LedgerRow, Purpose
from relance_sender.domain.policy import ConsentRecord, Suppression
from relance_sender.ports import SendCheck

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


_COLUMN_TYPES: Final = (
    "text[], text[], text[], text[], text[], text[], text[], text[], integer[], "
    "timestamptz[], timestamptz[], timestamptz[], timestamptz[], text[], text[], "
    "text[], text[], text[]"
)
_INSERT_MANY: Final = (
    f"INSERT INTO sender_ledger ({_COLUMNS}) SELECT {_COLUMNS.replace('request', 'request::jsonb')}"
    " FROM unnest("
    + ", ".join(f"${n}::{t.strip()}" for n, t in enumerate(_COLUMN_TYPES.split(","), 1))
    + f") AS u ({_COLUMNS}) ORDER BY message_id"
    " ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
)

# The columns a save changes, as `unnest` arrays; the claim guard adds two more.
_SAVED: Final = (
    "message_id text, state text, attempts integer, updated_at timestamptz,"
    " first_attempt_at timestamptz, next_attempt_at timestamptz, owner text, address text,"
    " provider_message_id text, last_error text"
)
_SAVED_NAMES: Final = [c.split()[0] for c in _SAVED.split(",")]
_SAVED_SET: Final = ", ".join(f"{c} = u.{c}" for c in _SAVED_NAMES[1:])


def _unnest(columns: Sequence[str]) -> str:
    arrays = ", ".join(f"${n}::{c.split()[1]}[]" for n, c in enumerate(columns, 1))
    names = ", ".join(c.split()[0] for c in columns)
    return f"unnest({arrays}) AS u ({names})"


_SAVE_MANY: Final = (
    f"UPDATE sender_ledger AS l SET {_SAVED_SET} FROM {_unnest(_SAVED.split(','))}"
    " WHERE l.message_id = u.message_id"
)
_SETTLE_MANY: Final = (
    f"UPDATE sender_ledger AS l SET {_SAVED_SET}"
    f" FROM {_unnest([*_SAVED.split(','), ' claimed_owner text', ' claimed_attempts integer'])}"
    " WHERE l.message_id = u.message_id AND l.state = 'sending'"
    " AND l.owner = u.claimed_owner AND l.attempts = u.claimed_attempts"
    " RETURNING l.message_id"
)
_CHECKS_MANY: Final = (
    "SELECT s.reason, s.at AS suppressed_at, c.status, c.at AS consent_at"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])"
    "  WITH ORDINALITY AS q (shop_id, contact_key, channel, purpose, address, n)"
    " LEFT JOIN sender_suppressions s"
    "  ON s.shop_id = q.shop_id AND s.channel = q.channel AND s.address = q.address"
    " LEFT JOIN sender_consents c"
    "  ON c.shop_id = q.shop_id AND c.contact_key = q.contact_key AND c.channel = q.channel"
    "  AND c.purpose = q.purpose"
    " ORDER BY q.n"
)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of values -> one list per column (the `unnest` arrays)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


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

    async def insert_many(self, rows: Sequence[LedgerRow]) -> set[str]:
        if not rows:
            return set()
        # In message id order (the statement sorts too): two batches sharing ids lock
        # them in the same order, so they wait for each other instead of deadlocking.
        records = await self._conn.fetch(
            _INSERT_MANY, *_columns([_values(r) for r in rows], len(_COLUMN_TYPES.split(",")))
        )
        return {r["message_id"] for r in records}

    async def lock_many(self, message_ids: Sequence[str]) -> dict[str, LedgerRow]:
        if not message_ids:
            return {}
        records = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM sender_ledger WHERE message_id = ANY($1::text[])"
            " ORDER BY message_id FOR UPDATE",
            list(message_ids),
        )
        return {r["message_id"]: _row(r) for r in records}

    async def save_many(self, rows: Sequence[LedgerRow]) -> None:
        if len(rows) == 1:
            await self.save(rows[0])
        elif rows:
            ordered = sorted(rows, key=lambda r: r.message_id)
            await self._conn.execute(
                _SAVE_MANY, *_columns([_save_args(r) for r in ordered], len(_SAVED_NAMES))
            )

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

    async def send_checks_many(
        self, checks: Sequence[SendCheck]
    ) -> list[tuple[Suppression | None, ConsentRecord | None]]:
        if not checks:
            return []
        records = await self._conn.fetch(
            _CHECKS_MANY,
            *_columns(
                [(c.shop_id, c.contact_key, c.channel, c.purpose, c.address) for c in checks], 5
            ),
        )
        found: list[tuple[Suppression | None, ConsentRecord | None]] = []
        for check, record in zip(checks, records, strict=True):
            suppression = consent = None
            if record["reason"] is not None:
                suppression = Suppression(
                    check.shop_id,
                    check.channel,
                    check.address,
                    record["reason"],
                    record["suppressed_at"],
                )
            if record["status"] is not None:
                consent = ConsentRecord(
                    check.shop_id,
                    check.contact_key,
                    check.channel,
                    check.purpose,
                    record["status"],
                    record["consent_at"],
                )
            found.append((suppression, consent))
        return found

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


_Settle = tuple[LedgerRow, LedgerRow, "asyncio.Future[bool]"]  # settled row, claim, answer


class SettleWriter:
    """Group commit for the end of sends: settles that arrive while a write is in flight
    go together in the next one (one statement, one commit), so a busy sender pays one
    commit per group instead of one per message, and an idle one waits for nobody."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._queue: list[_Settle] = []
        self._writer: asyncio.Task[None] | None = None

    async def save(self, row: LedgerRow, claimed: LedgerRow) -> bool:
        saved: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((row, claimed, saved))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return await saved

    async def _write_queued(self) -> None:
        while self._queue:
            group: dict[str, _Settle] = {}
            later: list[_Settle] = []
            for entry in self._queue:
                # A message twice in one statement would be updated once: the copy waits.
                if entry[0].message_id in group:
                    later.append(entry)
                else:
                    group[entry[0].message_id] = entry
            self._queue = later
            await self._write(sorted(group.values(), key=lambda e: e[0].message_id))

    async def _write(self, ordered: list[_Settle]) -> None:
        try:
            records = await self._pool.fetch(
                _SETTLE_MANY,
                *_columns(
                    [(*_save_args(row), c.owner, c.attempts) for row, c, _ in ordered],
                    len(_SAVED_NAMES) + 2,
                ),
            )
        except BaseException as exc:
            for *_, saved in ordered:
                if not saved.done():
                    saved.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        written = {r["message_id"] for r in records}
        for row, _, saved in ordered:
            if not saved.done():
                saved.set_result(row.message_id in written)


class PostgresSenderStore:
    """Opens a transaction on a pooled connection per use."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._settles = SettleWriter(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresSenderTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresSenderTx(conn)

    async def save_claimed(self, row: LedgerRow, *, claimed: LedgerRow) -> bool:
        # One statement, no BEGIN/COMMIT round trips: the guard is the row's own claim.
        return await self._settles.save(row, claimed)
