"""A recompute racing the per-event path: every change is reported once, by whoever wrote it.

The recompute stages its diff in one statement and writes profiles in later ones; events
committed in between must keep their profile (and their change events), and a contact
profiled for the first time by both sides must not get two "previous: None" changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from relance_events.event import Event, new_event
from relance_events.payloads import (
    ContactIdentified,
    ContactTraits,
    LifecycleStageChanged,
    OrderCompleted,
    Payload,
)
from relance_segmentation.adapters.postgres import SegmentationRepository
from relance_segmentation.domain.lifecycle import LifecycleConfig
from relance_segmentation.ports import OrderLine, RecomputeResult, SegmentChange

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SHOP = "s1"


class AfterDiff:
    """A connection that runs `hook` right after the recompute staged its diff."""

    def __init__(self, conn: asyncpg.Connection, hook: Callable[[], Awaitable[None]]) -> None:
        self._conn = conn
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        status: str = await self._conn.execute(query, *args, **kwargs)
        if "create temp table seg_recompute_diff" in query:
            await self._hook()
        return status


def order(key: str, order_id: str, at: datetime) -> Event[Payload]:
    return new_event(
        OrderCompleted(order_id=order_id, total=Decimal(40)),
        shop_id=SHOP,
        contact_key=key,
        source="test",
        occurred_at=at,
    )


async def changes_of(
    repo: SegmentationRepository, conn: asyncpg.Connection, now: datetime
) -> list[SegmentChange]:
    return [c async for chunk in repo.recompute_changes(conn, SHOP, now) for c in chunk]


async def profile(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "select p.* from segmentation_profiles p join segmentation_contacts c"
        " on c.id = p.contact_id where c.shop_id = $1 and c.contact_key = $2",
        SHOP,
        key,
    )
    return row


async def imported(conn: asyncpg.Connection, repo: SegmentationRepository) -> None:
    """Two one-order customers, loaded in bulk: no profile yet."""
    orders = [
        OrderLine("o1", "x", NOW - timedelta(days=10), Decimal(40)),
        OrderLine("o2", "y", NOW - timedelta(days=20), Decimal(60)),
    ]
    async with conn.transaction():
        await repo.import_orders(conn, SHOP, orders, [], NOW)


async def recompute_with_an_event_after_the_diff(
    conn: asyncpg.Connection,
    database_url: str,
    repo: SegmentationRepository,
    event: Event[Payload],
    now: datetime,
) -> tuple[RecomputeResult, list[SegmentChange], list[SegmentChange]]:
    """Recompute as of `now` while another transaction applies `event` right after the
    diff was staged; the recompute's result, its staged changes, and the event's."""
    other = await asyncpg.connect(database_url)
    event_changes: list[SegmentChange] = []

    async def apply_elsewhere() -> None:
        async with other.transaction():
            event_changes.extend(await repo.apply_event(other, event, now))

    try:
        async with conn.transaction():
            result = await repo.recompute(AfterDiff(conn, apply_elsewhere), SHOP, now)  # type: ignore[arg-type]
            staged = await changes_of(repo, conn, now)
    finally:
        await other.close()
    return result, staged, event_changes


async def test_an_event_after_the_diff_keeps_its_profile_and_its_changes(
    conn: asyncpg.Connection, database_url: str
) -> None:
    repo = SegmentationRepository(LifecycleConfig())
    await imported(conn, repo)
    async with conn.transaction():
        await repo.recompute(conn, SHOP, NOW)
    later = NOW + timedelta(days=200)  # both lapse: one of them orders again meanwhile
    result, staged, event_changes = await recompute_with_an_event_after_the_diff(
        conn, database_url, repo, order("x", "o3", later), later
    )

    assert {c.contact_key for c in staged} == {"y"}
    assert result.profiles_written == 1
    assert result.changes_recorded == len(staged)
    stage = [c.payload for c in event_changes if isinstance(c.payload, LifecycleStageChanged)]
    assert [(p.previous, p.current) for p in stage] == [("new_customer", "loyal")]
    x = await profile(conn, "x")
    assert x is not None
    assert (x["stage"], x["revision"]) == ("loyal", 1)
    y = await profile(conn, "y")
    assert y is not None
    assert y["stage"] == "lapsing"


async def test_a_first_profile_written_by_an_event_after_the_diff_is_not_inserted_twice(
    conn: asyncpg.Connection, database_url: str
) -> None:
    repo = SegmentationRepository(LifecycleConfig())
    await imported(conn, repo)
    result, staged, event_changes = await recompute_with_an_event_after_the_diff(
        conn, database_url, repo, order("x", "o3", NOW), NOW
    )

    assert {c.contact_key for c in staged} == {"y"}
    assert (result.profiles_written, result.changes_recorded) == (1, len(staged)) == (1, 3)
    stage = [c.payload for c in event_changes if isinstance(c.payload, LifecycleStageChanged)]
    assert [(p.previous, p.current) for p in stage] == [(None, "loyal")]
    assert all(c.contact_key == "x" for c in event_changes)
    x = await profile(conn, "x")
    assert x is not None
    assert (x["stage"], x["revision"]) == ("loyal", 1)


async def test_an_event_waiting_on_a_recompute_insert_compares_with_its_profile(
    conn: asyncpg.Connection, database_url: str
) -> None:
    repo = SegmentationRepository(LifecycleConfig())
    await imported(conn, repo)
    other = await asyncpg.connect(database_url)
    identify: Event[Payload] = new_event(
        ContactIdentified(user_id="x", traits=ContactTraits(first_name="Ada")),
        shop_id=SHOP,
        contact_key="x",
        source="test",
        occurred_at=NOW,
    )

    async def identified() -> list[SegmentChange]:
        async with other.transaction():
            return await repo.apply_event(other, identify, NOW)

    try:
        tx = conn.transaction()
        await tx.start()
        await repo.recompute(conn, SHOP, NOW)
        staged = await changes_of(repo, conn, NOW)
        waiting = asyncio.create_task(identified())
        pid = other.get_server_pid()

        async def blocked() -> bool:
            state = await conn.fetchval(
                "select wait_event_type from pg_stat_activity where pid = $1", pid
            )
            return bool(state == "Lock")

        for _ in range(500):
            if await blocked():
                break
            await asyncio.sleep(0.01)
        assert await blocked()  # its first profile waits on the recompute's
        await tx.commit()
        event_changes = await waiting
    finally:
        await other.close()

    assert {c.contact_key for c in staged} == {"x", "y"}
    assert event_changes == []  # the recompute reported x's first profile; a name changes none
    x = await profile(conn, "x")
    assert x is not None
    assert (x["stage"], x["revision"]) == ("new_customer", 1)


async def test_a_profile_whose_contact_is_gone_is_removed_without_a_change(
    conn: asyncpg.Connection,
) -> None:
    """What a recompute leaves when it inserts the first profile of a contact an alias merge
    removes meanwhile: the next recompute drops it."""
    repo = SegmentationRepository(LifecycleConfig())
    await imported(conn, repo)
    async with conn.transaction():
        await repo.recompute(conn, SHOP, NOW)
    await conn.execute(
        "insert into segmentation_profiles (contact_id, shop_id, revision, stage, profiled_at)"
        " values (-1, $1, 0, 'prospect', $2)",
        SHOP,
        NOW,
    )
    later = NOW + timedelta(days=1)
    async with conn.transaction():
        result = await repo.recompute(conn, SHOP, later)
        staged = await changes_of(repo, conn, later)
    assert staged == []
    assert result.profiles_written == 0
    assert await conn.fetchval("select count(*) from segmentation_profiles") == 2


async def test_a_held_recompute_lock_excludes_other_transactions(pool: asyncpg.Pool) -> None:
    """PostgreSQL only: the in-memory store assumes one writer and grants every lock."""
    repo = SegmentationRepository(LifecycleConfig())
    async with pool.acquire() as conn, pool.acquire() as other:
        async with conn.transaction():
            assert await repo.lock_recompute(conn, SHOP, wait=False)
            async with other.transaction():
                assert not await repo.lock_recompute(other, SHOP, wait=False)
                assert await repo.lock_recompute(other, "other", wait=False)
        async with other.transaction():
            assert await repo.lock_recompute(other, SHOP, wait=False)
