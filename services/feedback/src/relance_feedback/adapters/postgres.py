"""PostgreSQL storage for answers, leave reasons, contact and order cards, and support
alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from relance_feedback.domain.alerts import ContactCard, OrderCard, OrderLine
from relance_feedback.domain.answers import Answer
from relance_feedback.domain.leave_reasons import LeaveReasonRecord, ReasonCount
from relance_feedback.domain.stats import AnswerCounts
from relance_feedback.ports import (
    AlertCounts,
    AttemptRecord,
    Connection,
    DueAlert,
    NewAlert,
)


async def _lock_key(conn: Connection, *parts: str) -> None:
    """A transaction-level lock on a key whose row may not exist yet."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "\x1f".join(parts))


class PoolTransactor:
    """`Transactor` over an asyncpg pool (`platform.pool`)."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn


def _items_json(order: OrderCard) -> str:
    return orjson.dumps(
        [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "price": str(line.price),
            }
            for line in order.items
        ]
    ).decode()


def _leave_reason(row: Any) -> LeaveReasonRecord:
    return LeaveReasonRecord(
        reason_id=row["reason_id"],
        shop_id=row["shop_id"],
        message_id=row["message_id"],
        contact_key=row["contact_key"],
        plan=row["plan"],
        step=row["step"],
        reason=row["reason"],
        comment=row["comment"],
        first_given_at=row["first_given_at"],
        given_at=row["given_at"],
        revision=row["revision"],
    )


def _answer(row: Any) -> Answer:
    return Answer(
        answer_id=row["answer_id"],
        shop_id=row["shop_id"],
        order_id=row["order_id"],
        contact_key=row["contact_key"],
        choice=row["choice"],
        nps=row["nps"],
        comment=row["comment"],
        origin=row["origin"],
        message_id=row["message_id"],
        first_answered_at=row["first_answered_at"],
        answered_at=row["answered_at"],
        revision=row["revision"],
        alerted=row["alerted"],
    )


class PostgresFeedbackRepository:
    """`FeedbackRepository` on the tables of `migrations/` (0001 feedback, 0002 leave reasons)."""

    async def remember_contact(
        self, conn: Connection, shop_id: str, contact_key: str, card: ContactCard, now: datetime
    ) -> None:
        # A later identify that omits a trait keeps the one we had.
        await conn.execute(
            """
            INSERT INTO feedback_contacts
                (shop_id, contact_key, first_name, last_name, email, phone, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (shop_id, contact_key) DO UPDATE SET
                first_name = COALESCE(EXCLUDED.first_name, feedback_contacts.first_name),
                last_name  = COALESCE(EXCLUDED.last_name, feedback_contacts.last_name),
                email      = COALESCE(EXCLUDED.email, feedback_contacts.email),
                phone      = COALESCE(EXCLUDED.phone, feedback_contacts.phone),
                updated_at = GREATEST(EXCLUDED.updated_at, feedback_contacts.updated_at)
            """,
            shop_id,
            contact_key,
            card.first_name,
            card.last_name,
            card.email,
            card.phone,
            now,
        )

    async def remember_order(
        self, conn: Connection, shop_id: str, contact_key: str, order: OrderCard
    ) -> None:
        await conn.execute(
            """
            INSERT INTO feedback_orders
                (shop_id, order_id, contact_key, ordered_at, total, currency, items)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
            ON CONFLICT (shop_id, order_id) DO UPDATE SET
                contact_key = EXCLUDED.contact_key, ordered_at = EXCLUDED.ordered_at,
                total = EXCLUDED.total, currency = EXCLUDED.currency, items = EXCLUDED.items
            """,
            shop_id,
            order.order_id,
            contact_key,
            order.ordered_at,
            order.total,
            order.currency,
            _items_json(order),
        )

    async def contact(self, conn: Connection, shop_id: str, contact_key: str) -> ContactCard | None:
        row = await conn.fetchrow(
            "SELECT first_name, last_name, email, phone FROM feedback_contacts"
            " WHERE shop_id = $1 AND contact_key = $2",
            shop_id,
            contact_key,
        )
        if row is None:
            return None
        return ContactCard(row["first_name"], row["last_name"], row["email"], row["phone"])

    async def order(self, conn: Connection, shop_id: str, order_id: str) -> OrderCard | None:
        row = await conn.fetchrow(
            "SELECT order_id, ordered_at, total, currency, items::text AS items"
            " FROM feedback_orders WHERE shop_id = $1 AND order_id = $2",
            shop_id,
            order_id,
        )
        if row is None:
            return None
        lines = tuple(
            OrderLine(
                product_id=str(item["product_id"]),
                name=item.get("name"),
                quantity=int(item.get("quantity", 1)),
                price=Decimal(str(item.get("price", "0"))),
            )
            for item in orjson.loads(row["items"])
        )
        return OrderCard(row["order_id"], row["ordered_at"], row["total"], row["currency"], lines)

    async def lock_answer(
        self, conn: Connection, shop_id: str, order_id: str, contact_key: str
    ) -> Answer | None:
        # The row may not exist yet, so lock the key itself: two first answers for the same
        # (order, contact) arriving together are applied one after the other.
        await _lock_key(conn, "feedback.answer", shop_id, order_id, contact_key)
        row = await conn.fetchrow(
            "SELECT * FROM feedback_answers"
            " WHERE shop_id = $1 AND order_id = $2 AND contact_key = $3",
            shop_id,
            order_id,
            contact_key,
        )
        return None if row is None else _answer(row)

    async def save_answer(self, conn: Connection, answer: Answer) -> None:
        await conn.execute(
            """
            INSERT INTO feedback_answers
                (shop_id, order_id, contact_key, answer_id, choice, nps, comment, origin,
                 message_id, first_answered_at, answered_at, revision, alerted)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT (shop_id, order_id, contact_key) DO UPDATE SET
                choice = EXCLUDED.choice, nps = EXCLUDED.nps, comment = EXCLUDED.comment,
                origin = EXCLUDED.origin, message_id = EXCLUDED.message_id,
                answered_at = EXCLUDED.answered_at, revision = EXCLUDED.revision,
                alerted = EXCLUDED.alerted
            """,
            answer.shop_id,
            answer.order_id,
            answer.contact_key,
            answer.answer_id,
            answer.choice,
            answer.nps,
            answer.comment,
            answer.origin,
            answer.message_id,
            answer.first_answered_at,
            answer.answered_at,
            answer.revision,
            answer.alerted,
        )

    async def add_alert(self, conn: Connection, alert: NewAlert) -> bool:
        finished = None if alert.state == "pending" else alert.created_at
        next_at = alert.created_at if alert.state == "pending" else None
        inserted = await conn.fetchval(
            """
            INSERT INTO feedback_alerts
                (alert_id, shop_id, answer_id, order_id, contact_key, webhook_id, url, body,
                 state, created_at, next_attempt_at, last_error, finished_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT DO NOTHING
            RETURNING true
            """,
            alert.alert_id,
            alert.shop_id,
            alert.answer_id,
            alert.order_id,
            alert.contact_key,
            alert.webhook_id,
            alert.url,
            alert.body,
            alert.state,
            alert.created_at,
            next_at,
            alert.last_error,
            finished,
        )
        return bool(inserted)

    async def claim_due_alerts(
        self, conn: Connection, now: datetime, limit: int, lease_until: datetime
    ) -> list[DueAlert]:
        rows = await conn.fetch(
            """
            WITH due AS (
                SELECT alert_id FROM feedback_alerts
                WHERE state = 'pending' AND next_attempt_at <= $1
                ORDER BY next_attempt_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            )
            UPDATE feedback_alerts a SET next_attempt_at = $3
            FROM due WHERE a.alert_id = due.alert_id
            RETURNING a.alert_id, a.shop_id, a.webhook_id, a.url, a.body, a.attempts,
                EXISTS (
                    SELECT 1 FROM feedback_endpoints e
                    WHERE e.shop_id = a.shop_id AND e.url = a.url AND e.disabled_at IS NOT NULL
                ) AS endpoint_disabled
            """,
            now,
            limit,
            lease_until,
        )
        return [
            DueAlert(
                alert_id=row["alert_id"],
                shop_id=row["shop_id"],
                webhook_id=row["webhook_id"],
                url=row["url"],
                body=bytes(row["body"]),
                attempts=row["attempts"],
                endpoint_disabled=row["endpoint_disabled"],
            )
            for row in rows
        ]

    async def record_attempt(self, conn: Connection, record: AttemptRecord) -> None:
        finished = None if record.state == "pending" else record.started_at
        await conn.execute(
            """
            UPDATE feedback_alerts SET
                state = $2, attempts = GREATEST(attempts, $3), next_attempt_at = $4,
                last_attempt_at = $5, last_status = $6, last_error = $7, finished_at = $8
            WHERE alert_id = $1
            """,
            record.alert_id,
            record.state,
            record.attempt,
            record.next_attempt_at,
            record.started_at,
            record.status,
            record.error,
            finished,
        )
        if record.attempt > 0:
            await conn.execute(
                """
                INSERT INTO feedback_alert_attempts
                    (shop_id, alert_id, attempt, started_at, status, error, duration_ms)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (alert_id, attempt) DO NOTHING
                """,
                record.shop_id,
                record.alert_id,
                record.attempt,
                record.started_at,
                record.status,
                record.error,
                record.duration_ms,
            )

    async def disable_endpoint(
        self, conn: Connection, shop_id: str, url: str, now: datetime, reason: str
    ) -> None:
        await conn.execute(
            """
            INSERT INTO feedback_endpoints (shop_id, url, disabled_at, disabled_reason)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (shop_id, url) DO UPDATE SET
                disabled_at = EXCLUDED.disabled_at, disabled_reason = EXCLUDED.disabled_reason
            """,
            shop_id,
            url,
            now,
            reason,
        )

    async def enable_endpoint(self, conn: Connection, shop_id: str, url: str) -> None:
        await conn.execute(
            "UPDATE feedback_endpoints SET disabled_at = NULL, disabled_reason = NULL"
            " WHERE shop_id = $1 AND url = $2",
            shop_id,
            url,
        )

    async def answer_counts(
        self, conn: Connection, shop_id: str, start: datetime, end: datetime
    ) -> AnswerCounts:
        row = await conn.fetchrow(
            """
            SELECT
                count(*) FILTER (WHERE choice = 'very_satisfied') AS very_satisfied,
                count(*) FILTER (WHERE choice = 'satisfied') AS satisfied,
                count(*) FILTER (WHERE choice = 'not_satisfied') AS not_satisfied,
                count(*) FILTER (WHERE nps >= 9) AS promoters,
                count(*) FILTER (WHERE nps BETWEEN 7 AND 8) AS passives,
                count(*) FILTER (WHERE nps <= 6) AS detractors
            FROM feedback_answers
            WHERE shop_id = $1 AND answered_at >= $2 AND answered_at < $3
            """,
            shop_id,
            start,
            end,
        )
        return AnswerCounts(**{key: int(row[key]) for key in AnswerCounts.__slots__})

    async def alert_counts(
        self, conn: Connection, shop_id: str, start: datetime, end: datetime
    ) -> AlertCounts:
        row = await conn.fetchrow(
            """
            SELECT
                count(*) FILTER (WHERE state = 'pending') AS pending,
                count(*) FILTER (WHERE state = 'sent') AS sent,
                count(*) FILTER (WHERE state = 'failed') AS failed
            FROM feedback_alerts
            WHERE shop_id = $1 AND created_at >= $2 AND created_at < $3
            """,
            shop_id,
            start,
            end,
        )
        return AlertCounts(int(row["pending"]), int(row["sent"]), int(row["failed"]))

    async def lock_leave_reason(
        self, conn: Connection, shop_id: str, message_id: str
    ) -> LeaveReasonRecord | None:
        # As for answers: the first row may not exist yet, so lock the key itself.
        await _lock_key(conn, "feedback.leave_reason", shop_id, message_id)
        row = await conn.fetchrow(
            "SELECT * FROM feedback_leave_reasons WHERE shop_id = $1 AND message_id = $2",
            shop_id,
            message_id,
        )
        return None if row is None else _leave_reason(row)

    async def save_leave_reason(self, conn: Connection, record: LeaveReasonRecord) -> None:
        await conn.execute(
            """
            INSERT INTO feedback_leave_reasons
                (shop_id, message_id, reason_id, contact_key, plan, step, reason, comment,
                 first_given_at, given_at, revision)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            ON CONFLICT (shop_id, message_id) DO UPDATE SET
                reason = EXCLUDED.reason, comment = EXCLUDED.comment,
                given_at = EXCLUDED.given_at, revision = EXCLUDED.revision
            """,
            record.shop_id,
            record.message_id,
            record.reason_id,
            record.contact_key,
            record.plan,
            record.step,
            record.reason,
            record.comment,
            record.first_given_at,
            record.given_at,
            record.revision,
        )

    async def leave_reason_counts(
        self, conn: Connection, shop_id: str, start: datetime, end: datetime
    ) -> list[ReasonCount]:
        rows = await conn.fetch(
            """
            SELECT plan, step, reason, count(*) AS n
            FROM feedback_leave_reasons
            WHERE shop_id = $1 AND given_at >= $2 AND given_at < $3
            GROUP BY plan, step, reason
            """,
            shop_id,
            start,
            end,
        )
        return [ReasonCount(r["plan"], r["step"], r["reason"], int(r["n"])) for r in rows]
