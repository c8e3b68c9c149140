"""PostgreSQL adapters: contact state (row-locked), durable timers, and the decision journal.

Every method takes a connection already inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, assert_never

from asyncpg import Record

from relance_orchestrator.adapters.state_codec import (
    UnreadableStateError,
    pack_state,
    unpack_state,
)
from relance_orchestrator.domain.commands import (
    CancelWakeups,
    Command,
    DecisionRecorded,
    Finish,
    OrderAttributed,
    RequestMessage,
    ScheduleWakeup,
)
from relance_orchestrator.domain.state import ContactState
from relance_orchestrator.ports import (
    DueTimer,
    StepCounts,
    TimerWrite,
    Tracked,
    UnreadableState,
)
from relance_runtime.db import Connection

_STATE = "c.packed, CASE WHEN c.packed IS NULL THEN c.state::text END"


def _state_of(row: Record, at: int = 0) -> ContactState:
    return unpack_state(row[at], row[at + 1])


@dataclass(frozen=True, slots=True)
class StoredContact:
    state: ContactState
    version: int
    updated_at: datetime


class PostgresContactStore:
    """Contact states, packed (see `state_codec`), one row per contact, row-locked."""

    async def lock(self, conn: Connection, shop_id: str, contact_key: str) -> ContactState:
        select = f"""SELECT {_STATE} FROM orchestrator_contacts c
                     WHERE shop_id = $1 AND contact_key = $2 FOR UPDATE"""
        row = await conn.fetchrow(select, shop_id, contact_key)
        if row is None:
            fresh = ContactState.new(shop_id, contact_key)
            await conn.execute(
                """INSERT INTO orchestrator_contacts (shop_id, contact_key, packed)
                   VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
                shop_id,
                contact_key,
                pack_state(fresh),
            )
            row = await conn.fetchrow(select, shop_id, contact_key)
            assert row is not None
        return _state_of(row)

    async def lock_existing(
        self, conn: Connection, shop_id: str, contact_key: str
    ) -> ContactState | None:
        row = await conn.fetchrow(
            f"""SELECT {_STATE} FROM orchestrator_contacts c
                WHERE shop_id = $1 AND contact_key = $2 FOR UPDATE""",
            shop_id,
            contact_key,
        )
        return None if row is None else _state_of(row)

    async def lock_many(
        self, conn: Connection, contacts: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ContactState]:
        if not contacts:
            return {}
        shops, keys = [s for s, _ in contacts], [c for _, c in contacts]
        lock = f"""SELECT c.shop_id, c.contact_key, {_STATE}
                   FROM orchestrator_contacts c
                   JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(shop_id, contact_key, n)
                     ON c.shop_id = k.shop_id AND c.contact_key = k.contact_key
                   ORDER BY k.n FOR UPDATE OF c"""
        rows = await conn.fetch(lock, shops, keys)
        out = {(r[0], r[1]): _state_of(r, 2) for r in rows}
        missing = [c for c in contacts if c not in out]
        if missing:
            fresh = {(s, c): ContactState.new(s, c) for s, c in missing}
            inserted = await conn.fetch(
                """INSERT INTO orchestrator_contacts (shop_id, contact_key, packed)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
                   ON CONFLICT DO NOTHING RETURNING shop_id, contact_key""",
                [s for s, _ in missing],
                [c for _, c in missing],
                [pack_state(f) for f in fresh.values()],
            )
            # Ours (inserted in this transaction, so locked): the state we just wrote.
            for r in inserted:
                out[(r[0], r[1])] = fresh[(r[0], r[1])]
            # A concurrent writer created the others first: read back what is there.
            raced = [c for c in missing if c not in out]
            if raced:
                rows = await conn.fetch(lock, [s for s, _ in raced], [c for _, c in raced])
                out.update({(r[0], r[1]): _state_of(r, 2) for r in rows})
        return out

    async def try_lock_many(
        self, conn: Connection, contacts: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ContactState | UnreadableState]:
        if not contacts:
            return {}
        rows = await conn.fetch(
            f"""SELECT c.shop_id, c.contact_key, {_STATE}
                FROM orchestrator_contacts c
                JOIN unnest($1::text[], $2::text[]) AS k(shop_id, contact_key)
                  ON c.shop_id = k.shop_id AND c.contact_key = k.contact_key
                FOR UPDATE OF c SKIP LOCKED""",
            [s for s, _ in contacts],
            [c for _, c in contacts],
        )
        out: dict[tuple[str, str], ContactState | UnreadableState] = {}
        for r in rows:
            try:
                out[(r[0], r[1])] = _state_of(r, 2)
            except UnreadableStateError as exc:
                out[(r[0], r[1])] = UnreadableState(f"unreadable contact state: {exc}")
        return out

    async def peek(self, conn: Connection, shop_id: str, contact_key: str) -> StoredContact | None:
        """A contact's state as stored, without locking it (for operators)."""
        row = await conn.fetchrow(
            f"""SELECT {_STATE}, c.version, c.updated_at FROM orchestrator_contacts c
                WHERE shop_id = $1 AND contact_key = $2""",
            shop_id,
            contact_key,
        )
        if row is None:
            return None
        return StoredContact(_state_of(row), row["version"], row["updated_at"])

    async def save_many(self, conn: Connection, states: Sequence[ContactState]) -> None:
        if not states:
            return
        await conn.execute(
            """UPDATE orchestrator_contacts c
               SET packed = u.packed, state = NULL, version = c.version + 1, updated_at = now()
               FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(shop_id, contact_key, packed)
               WHERE c.shop_id = u.shop_id AND c.contact_key = u.contact_key""",
            [s.shop_id for s in states],
            [s.contact_key for s in states],
            [pack_state(s) for s in states],
        )


class PostgresTimerStore:
    async def claim_due(self, conn: Connection, now: datetime, limit: int) -> list[DueTimer]:
        rows = await conn.fetch(
            """SELECT shop_id, contact_key, timer_key, due_at, attempts FROM orchestrator_timers
               WHERE due_at <= $1 AND state = 'pending' AND (retry_at IS NULL OR retry_at <= $1)
               ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
            now,
            limit,
        )
        return [DueTimer(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def failed(
        self,
        conn: Connection,
        timer: DueTimer,
        error: str,
        *,
        retry_at: datetime,
        park: bool,
    ) -> None:
        """Count a failed firing: retry later, or park the timer for good."""
        await conn.execute(
            """UPDATE orchestrator_timers
               SET attempts = attempts + 1, last_error = $5, retry_at = $6,
                   state = CASE WHEN $7 THEN 'parked' ELSE 'pending' END
               WHERE shop_id = $1 AND contact_key = $2 AND timer_key = $3 AND due_at = $4""",
            timer.shop_id,
            timer.contact_key,
            timer.key,
            timer.due_at,
            error[:2000],
            retry_at,
            park,
        )

    async def of_contact(
        self, conn: Connection, shop_id: str, contact_key: str
    ) -> list[dict[str, Any]]:
        """A contact's timers (for operators): key, due time, state, attempts, last error."""
        rows = await conn.fetch(
            """SELECT timer_key, due_at, state, attempts, retry_at, last_error
               FROM orchestrator_timers WHERE shop_id = $1 AND contact_key = $2
               ORDER BY due_at, timer_key""",
            shop_id,
            contact_key,
        )
        return [dict(r) for r in rows]

    async def parked(self, conn: Connection, shop_id: str) -> dict[str, int]:
        """Parked timers per plan."""
        rows = await conn.fetch(
            """SELECT split_part(timer_key, '/', 1) AS plan, count(*) AS n
               FROM orchestrator_timers WHERE shop_id = $1 AND state = 'parked'
               GROUP BY 1 ORDER BY 1""",
            shop_id,
        )
        return {r["plan"]: int(r["n"]) for r in rows}

    async def delete(self, conn: Connection, timers: Sequence[DueTimer]) -> None:
        if not timers:
            return
        await conn.execute(
            """DELETE FROM orchestrator_timers t
               USING unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
                 AS d(shop_id, contact_key, timer_key, due_at)
               WHERE t.shop_id = d.shop_id AND t.contact_key = d.contact_key
                 AND t.timer_key = d.timer_key AND t.due_at = d.due_at""",
            [t.shop_id for t in timers],
            [t.contact_key for t in timers],
            [t.key for t in timers],
            [t.due_at for t in timers],
        )

    async def write(self, conn: Connection, writes: Sequence[TimerWrite]) -> None:
        upserts = [w for w in writes if w.due_at is not None]
        deletes = [w for w in writes if w.due_at is None]
        if upserts:
            await conn.execute(
                """INSERT INTO orchestrator_timers (shop_id, contact_key, timer_key, due_at)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
                   ON CONFLICT (shop_id, contact_key, timer_key)
                   DO UPDATE SET due_at = EXCLUDED.due_at, state = 'pending', attempts = 0,
                                 retry_at = NULL, last_error = NULL""",
                [w.shop_id for w in upserts],
                [w.contact_key for w in upserts],
                [w.key for w in upserts],
                [w.due_at for w in upserts],
            )
        if deletes:
            await conn.execute(
                """DELETE FROM orchestrator_timers t
                   USING unnest($1::text[], $2::text[], $3::text[]) AS d(shop_id, contact_key, k)
                   WHERE t.shop_id = d.shop_id AND t.contact_key = d.contact_key
                     AND t.timer_key = d.k""",
                [w.shop_id for w in deletes],
                [w.contact_key for w in deletes],
                [w.key for w in deletes],
            )


JournalRow = tuple[
    str, str, str | None, str | None, str | None, str | None, Decimal | None, datetime
]


def journal_rows(commands: Sequence[Command]) -> list[JournalRow]:
    """(kind, plan, step, plan_instance, message_id, reason, amount, at) per journalled command."""
    rows: list[JournalRow] = []
    for c in commands:
        match c:
            case RequestMessage():
                rows.append(
                    ("requested", c.plan, c.step, c.plan_instance, c.message_id, None, None, c.at)
                )
            case DecisionRecorded():
                rows.append(
                    (c.decision, c.plan, c.step, c.plan_instance, None, c.reason, None, c.at)
                )
            case Finish():
                rows.append(("finished", c.plan, None, c.plan_instance, None, c.reason, None, c.at))
            case OrderAttributed():
                rows.append(
                    ("converted", c.plan, c.step, None, c.message_id, c.order_id, c.revenue, c.at)
                )
            case ScheduleWakeup() | CancelWakeups():
                continue
            case _:
                assert_never(c)
    return rows


class PostgresJournal:
    async def record(
        self, conn: Connection, decisions: Sequence[tuple[ContactState, Sequence[Command]]]
    ) -> None:
        rows = [
            (state.shop_id, state.contact_key, *row)
            for state, commands in decisions
            for row in journal_rows(commands)
        ]
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        await conn.execute(
            """INSERT INTO orchestrator_journal
               (shop_id, contact_key, kind, plan, step, plan_instance, message_id, reason,
                amount, at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                    $6::text[], $7::text[], $8::text[], $9::numeric[],
                                    $10::timestamptz[])
               ON CONFLICT DO NOTHING""",
            *[list(c) for c in columns],
        )

    async def track(self, conn: Connection, tracked: Sequence[Tracked]) -> None:
        if not tracked:
            return
        await conn.execute(
            """INSERT INTO orchestrator_journal
               (shop_id, contact_key, kind, plan, step, plan_instance, message_id, at)
               SELECT j.shop_id, j.contact_key, t.kind, j.plan, j.step, j.plan_instance,
                      j.message_id, t.at
               FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
                      AS t(shop_id, kind, message_id, at)
               JOIN orchestrator_journal j
                 ON j.shop_id = t.shop_id AND j.message_id = t.message_id
                AND j.kind = 'requested'
               ON CONFLICT DO NOTHING""",
            [t.shop_id for t in tracked],
            [t.kind for t in tracked],
            [t.message_id for t in tracked],
            [t.at for t in tracked],
        )

    async def timer_parked(
        self, conn: Connection, timer: DueTimer, reason: str, at: datetime
    ) -> None:
        await conn.execute(
            """INSERT INTO orchestrator_journal
               (shop_id, contact_key, kind, plan, step, plan_instance, message_id, reason, at)
               VALUES ($1, $2, 'parked', $3, NULL, $4, NULL, $5, $6)""",
            timer.shop_id,
            timer.contact_key,
            timer.key.split("/", 1)[0],
            timer.key,
            reason[:2000],
            at,
        )

    async def stats(
        self, conn: Connection, shop_id: str, since: datetime | None
    ) -> list[StepCounts]:
        """Per plan and step: what the journal holds (since `since`, by request time)."""
        rows = await conn.fetch(
            """WITH requested AS (
                   SELECT message_id, plan, step FROM orchestrator_journal
                   WHERE shop_id = $1 AND kind = 'requested' AND ($2::timestamptz IS NULL
                         OR at >= $2)
               )
               SELECT j.plan, j.step,
                      count(*) FILTER (WHERE j.kind = 'requested') AS requested,
                      count(*) FILTER (WHERE j.kind = 'sent') AS sent,
                      count(*) FILTER (WHERE j.kind = 'opened') AS opened,
                      count(*) FILTER (WHERE j.kind = 'clicked') AS clicked,
                      count(*) FILTER (WHERE j.kind = 'converted') AS converted,
                      coalesce(sum(j.amount) FILTER (WHERE j.kind = 'converted'), 0) AS revenue
               FROM orchestrator_journal j JOIN requested r ON r.message_id = j.message_id
               WHERE j.shop_id = $1
                 AND j.kind IN ('requested', 'sent', 'opened', 'clicked', 'converted')
               GROUP BY j.plan, j.step""",
            shop_id,
            since,
        )
        decisions = await conn.fetch(
            """SELECT plan, step,
                      count(*) FILTER (WHERE kind = 'held') AS held,
                      count(*) FILTER (WHERE kind = 'dropped') AS dropped,
                      count(*) FILTER (WHERE kind = 'skipped') AS skipped
               FROM orchestrator_journal
               WHERE shop_id = $1 AND kind IN ('held', 'dropped', 'skipped')
                 AND ($2::timestamptz IS NULL OR at >= $2)
               GROUP BY plan, step""",
            shop_id,
            since,
        )
        out: dict[tuple[str, str], StepCounts] = {}
        for r in rows:
            out[(r["plan"], r["step"])] = StepCounts(
                plan=r["plan"],
                step=r["step"],
                requested=r["requested"],
                sent=r["sent"],
                opened=r["opened"],
                clicked=r["clicked"],
                converted=r["converted"],
                revenue=Decimal(r["revenue"]),
            )
        for r in decisions:
            key = (r["plan"], r["step"])
            base = out.get(key) or StepCounts(plan=r["plan"], step=r["step"])
            out[key] = replace(base, held=r["held"], dropped=r["dropped"], skipped=r["skipped"])
        return [out[k] for k in sorted(out)]
