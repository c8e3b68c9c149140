"""The PostgreSQL repository on its own."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from relance_feedback.adapters.postgres import PostgresFeedbackRepository
from relance_feedback.domain.alerts import ContactCard, OrderCard, OrderLine
from relance_feedback.domain.answers import Submission, record
from relance_feedback.ports import NewAlert

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
REPO = PostgresFeedbackRepository()


async def test_contact_cards_merge_and_order_cards_round_trip(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await REPO.remember_contact(conn, "s", "u", ContactCard("Ada", None, "a@x.io", None), T0)
        await REPO.remember_contact(
            conn, "s", "u", ContactCard(None, "L", None, "+33612345678"), T0
        )
        assert await REPO.contact(conn, "s", "u") == ContactCard(
            "Ada", "L", "a@x.io", "+33612345678"
        )
        assert await REPO.contact(conn, "other-shop", "u") is None
        order = OrderCard("o", T0, Decimal("12.5000"), "EUR",
                          (OrderLine("p", "Mug", 2, Decimal("6.25")),))  # fmt: skip
        await REPO.remember_order(conn, "s", "u", order)
        assert await REPO.order(conn, "s", "o") == order


async def test_answers_round_trip_and_concurrent_first_answers_serialise(
    pool: asyncpg.Pool,
) -> None:
    submission = Submission("s", "o", "u", "not_satisfied", 2, "bad", "api", None)

    async def submit(delay: float) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            previous = await REPO.lock_answer(conn, "s", "o", "u")
            await asyncio.sleep(delay)
            outcome = record(previous, submission, T0)
            if outcome.changed:
                await REPO.save_answer(conn, outcome.answer)
            return outcome.alert

    alerts = await asyncio.gather(submit(0.2), submit(0.0))
    assert sorted(alerts) == [False, True]
    async with pool.acquire() as conn:
        stored = await REPO.lock_answer(conn, "s", "o", "u")
    assert stored == record(None, submission, T0).answer


def alert(n: int) -> NewAlert:
    return NewAlert(uuid.uuid4(), "s", uuid.uuid4(), f"o{n}", "u", f"msg_{n}", "http://x/",
                    b"{}", T0, "pending")  # fmt: skip


async def test_due_alerts_are_claimed_once_and_leased(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for n in range(6):
            assert await REPO.add_alert(conn, alert(n))
        assert not await REPO.add_alert(conn, alert(0))  # same webhook id

    async def claim() -> list[str]:
        async with pool.acquire() as conn, conn.transaction():
            due = await REPO.claim_due_alerts(conn, T0, 4, T0 + timedelta(minutes=1))
            await asyncio.sleep(0.1)
            return [d.webhook_id for d in due]

    one, two = await asyncio.gather(claim(), claim())
    assert not set(one) & set(two)
    assert len(one) + len(two) == 6
    async with pool.acquire() as conn:
        assert await REPO.claim_due_alerts(conn, T0 + timedelta(seconds=59), 10, T0) == []
        again = await REPO.claim_due_alerts(conn, T0 + timedelta(minutes=1), 10, T0)
    assert len(again) == 6  # a crashed worker's lease expires and the alerts come back


async def test_answer_counts_respect_the_window(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for i, (choice, nps) in enumerate([("satisfied", 9), ("not_satisfied", 0)]):
            sub = Submission("s", f"o{i}", "u", choice, nps, None, "api", None)  # type: ignore[arg-type]
            await REPO.save_answer(conn, record(None, sub, T0 - timedelta(days=i * 10)).answer)
        week = await REPO.answer_counts(conn, "s", T0 - timedelta(days=7), T0 + timedelta(1))
        month = await REPO.answer_counts(conn, "s", T0 - timedelta(days=30), T0 + timedelta(1))
        other = await REPO.answer_counts(conn, "other", T0 - timedelta(days=30), T0 + timedelta(1))
    assert (week.satisfied, week.not_satisfied, week.promoters, week.detractors) == (1, 0, 1, 0)
    assert (month.satisfied, month.not_satisfied, month.promoters, month.detractors) == (1, 1, 1, 1)
    assert other.csat_answers == 0
