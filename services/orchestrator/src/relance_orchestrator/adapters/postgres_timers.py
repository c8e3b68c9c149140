"""PostgreSQL adapters: contact state (row-locked), durable timers, and the decision journal.

Every method takes a connection already inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

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
from relance_orchestrator.ports import DueTimer


class PostgresContactStore:
    async def lock(self, conn: asyncpg.Connection, shop_id: str, contact_key: str) -> ContactState:
        row = await conn.fetchrow(
            """SELECT state::text FROM orchestrator_contacts
               WHERE shop_id = $1 AND contact_key = $2 FOR UPDATE""",
            shop_id,
            contact_key,
        )
        if row is None:
            fresh = ContactState.new(shop_id, contact_key)
            await conn.execute(
                """INSERT INTO orchestrator_contacts (shop_id, contact_key, state)
                   VALUES ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING""",
                shop_id,
                contact_key,
                fresh.model_dump_json(),
            )
            row = await conn.fetchrow(
                """SELECT state::text FROM orchestrator_contacts
                   WHERE shop_id = $1 AND contact_key = $2 FOR UPDATE""",
                shop_id,
                contact_key,
            )
            assert row is not None
        return ContactState.model_validate_json(row[0])

    async def try_lock_many(
        self, conn: asyncpg.Connection, contacts: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ContactState]:
        if not contacts:
            return {}
        rows = await conn.fetch(
            """SELECT c.shop_id, c.contact_key, c.state::text
               FROM orchestrator_contacts c
               JOIN unnest($1::text[], $2::text[]) AS k(shop_id, contact_key)
                 ON c.shop_id = k.shop_id AND c.contact_key = k.contact_key
               FOR UPDATE OF c SKIP LOCKED""",
            [s for s, _ in contacts],
            [c for _, c in contacts],
        )
        return {(r[0], r[1]): ContactState.model_validate_json(r[2]) for r in rows}

    async def save(self, conn: asyncpg.Connection, state: ContactState) -> None:
        await conn.execute(
            """UPDATE orchestrator_contacts
               SET state = $3::jsonb, version = version + 1, updated_at = now()
               WHERE shop_id = $1 AND contact_key = $2""",
            state.shop_id,
            state.contact_key,
            state.model_dump_json(),
        )


class PostgresTimerStore:
    async def claim_due(
        self, conn: asyncpg.Connection, now: datetime, limit: int
    ) -> list[DueTimer]:
        rows = await conn.fetch(
            """SELECT shop_id, contact_key, timer_key, due_at FROM orchestrator_timers
               WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
            now,
            limit,
        )
        return [DueTimer(r[0], r[1], r[2], r[3]) for r in rows]

    async def delete(self, conn: asyncpg.Connection, timers: Sequence[DueTimer]) -> None:
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

    async def apply(
        self,
        conn: asyncpg.Connection,
        shop_id: str,
        contact_key: str,
        commands: Sequence[Command],
    ) -> None:
        upserts = [(c.key, c.at) for c in commands if isinstance(c, ScheduleWakeup)]
        cancels = [k for c in commands if isinstance(c, CancelWakeups) for k in c.keys]
        if upserts:
            await conn.execute(
                """INSERT INTO orchestrator_timers (shop_id, contact_key, timer_key, due_at)
                   SELECT $1, $2, k, d FROM unnest($3::text[], $4::timestamptz[]) AS u(k, d)
                   ON CONFLICT (shop_id, contact_key, timer_key)
                   DO UPDATE SET due_at = EXCLUDED.due_at""",
                shop_id,
                contact_key,
                [k for k, _ in upserts],
                [a for _, a in upserts],
            )
        if cancels:
            await conn.execute(
                """DELETE FROM orchestrator_timers
                   WHERE shop_id = $1 AND contact_key = $2 AND timer_key = ANY($3::text[])""",
                shop_id,
                contact_key,
                cancels,
            )


class PostgresJournal:
    async def record(
        self, conn: asyncpg.Connection, state: ContactState, commands: Sequence[Command]
    ) -> None:
        rows: list[tuple[object, ...]] = []
        for c in commands:
            match c:
                case RequestMessage():
                    rows.append(
                        (
                            "requested",
                            c.plan,
                            c.step,
                            c.plan_instance,
                            c.message_id,
                            None,
                            None,
                            c.at,
                        )
                    )
                case DecisionRecorded():
                    rows.append(
                        (c.decision, c.plan, c.step, c.plan_instance, None, c.reason, None, c.at)
                    )
                case Finish():
                    rows.append(
                        ("finished", c.plan, None, c.plan_instance, None, c.reason, None, c.at)
                    )
                case OrderAttributed():
                    rows.append(
                        (
                            "converted",
                            c.plan,
                            c.step,
                            None,
                            c.message_id,
                            c.order_id,
                            c.revenue,
                            c.at,
                        )
                    )
                case ScheduleWakeup() | CancelWakeups():
                    continue
        if rows:
            await conn.executemany(
                """INSERT INTO orchestrator_journal
                   (shop_id, contact_key, kind, plan, step, plan_instance, message_id, reason,
                    amount, at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                   ON CONFLICT DO NOTHING""",
                [(state.shop_id, state.contact_key, *r) for r in rows],
            )
