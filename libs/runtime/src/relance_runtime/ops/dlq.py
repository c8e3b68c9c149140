"""`relance dlq list|replay`: inspect dead letters and replay them to their source topic."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from relance_runtime.bus.ports import Publisher
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.db import Connection
from relance_runtime.ops.dead_letters import (
    DeadLetter,
    LetterId,
    OpsError,
    Replay,
    SourcePlace,
    parse_dead_letter,
    plan_replay,
    with_replays,
)
from relance_runtime.ops.readers import DeadLetterReader

_REPLAY_LOCK = 0x444C515245504C41  # "DLQREPLA": one replay at a time across processes


async def _has_replay_table(conn: Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('runtime_dlq_replays') IS NOT NULL"))


async def replays_of(
    conn: Connection, dlq_topic: str, ids: Sequence[LetterId]
) -> dict[LetterId, Replay]:
    if not ids or not await _has_replay_table(conn):
        return {}
    rows = await conn.fetch(
        """SELECT r.dlq_partition, r.dlq_offset, r.published, r.replayed_at
           FROM unnest($2::int[], $3::bigint[]) AS w(partition, pos)
           JOIN runtime_dlq_replays r
             ON r.dlq_topic = $1 AND r.dlq_partition = w.partition AND r.dlq_offset = w.pos""",
        dlq_topic,
        [i.partition for i in ids],
        [i.offset for i in ids],
    )
    return {
        LetterId(r["dlq_partition"], r["dlq_offset"]): Replay(
            "published" if r["published"] else "covered", r["replayed_at"]
        )
        for r in rows
    }


async def _replayed_sources(conn: Connection, places: Collection[SourcePlace]) -> set[SourcePlace]:
    if not places:
        return set()
    rows = await conn.fetch(
        """SELECT DISTINCT r.source_topic, r.source_partition, r.source_offset
           FROM unnest($1::text[], $2::int[], $3::bigint[]) AS w(topic, partition, pos)
           JOIN runtime_dlq_replays r
             ON r.source_topic = w.topic AND r.source_partition = w.partition
            AND r.source_offset = w.pos AND r.published""",
        [p.topic for p in places],
        [p.partition for p in places],
        [p.offset for p in places],
    )
    return {SourcePlace(r["source_topic"], r["source_partition"], r["source_offset"]) for r in rows}


async def list_dead_letters(
    pool: asyncpg.Pool,
    reader: DeadLetterReader,
    dlq_topic: str,
    *,
    limit: int | None = 50,
    pending_only: bool = False,
) -> list[DeadLetter]:
    """The most recent dead letters (oldest first), each with its replay if it had one."""
    records = await reader.newest(None if pending_only else limit)
    letters = [parse_dead_letter(r) for r in records]
    async with pool.acquire() as conn:
        replays = await replays_of(conn, dlq_topic, [letter.id for letter in letters])
    listed = with_replays(letters, replays)
    if pending_only:
        listed = [letter for letter in listed if letter.replay is None]
        if limit is not None:
            listed = listed[len(listed) - limit :] if limit else []
    return listed


@dataclass(frozen=True, slots=True)
class ReplayReport:
    dry_run: bool
    published: tuple[DeadLetter, ...] = ()
    covered: tuple[DeadLetter, ...] = ()
    already: tuple[DeadLetter, ...] = ()
    unreplayable: tuple[tuple[DeadLetter, str], ...] = ()
    missing: tuple[LetterId, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "published": [str(letter.id) for letter in self.published],
            "covered": [str(letter.id) for letter in self.covered],
            "already_replayed": [str(letter.id) for letter in self.already],
            "unreplayable": [{"id": str(x.id), "why": why} for x, why in self.unreplayable],
            "missing": [str(i) for i in self.missing],
        }


async def replay_dead_letters(
    pool: asyncpg.Pool,
    reader: DeadLetterReader,
    publisher: Publisher,
    dlq_topic: str,
    *,
    topics: Collection[str],
    ids: Sequence[LetterId] | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Re-publish dead letters (these `ids`, or every one not replayed yet) to their source.

    Each replay is recorded in `runtime_dlq_replays` in the transaction that publishes it.
    With the PostgreSQL log bus the copy is appended in that same transaction (exactly once);
    with Kafka it is published before the commit, so a crash in between may publish a copy
    twice on a later replay, which consumers' inboxes drop.
    """
    records = await reader.newest(None) if ids is None else await reader.fetch(ids)
    letters = [parse_dead_letter(r) for r in records]
    found = {letter.id for letter in letters}
    missing = tuple(i for i in dict.fromkeys(ids or ()) if i not in found)
    async with pool.acquire() as conn, conn.transaction():
        if not await _has_replay_table(conn):
            raise OpsError("table runtime_dlq_replays is missing: run `relance migrate` first")
        if not dry_run:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _REPLAY_LOCK)
        replayed = await replays_of(conn, dlq_topic, [letter.id for letter in letters])
        sources = await _replayed_sources(
            conn, {letter.source for letter in letters if letter.source is not None}
        )
        plan = plan_replay(letters, replayed=replayed, replayed_sources=sources, topics=topics)
        if not dry_run:
            messages = [letter.to_message() for letter in plan.publish]
            if isinstance(publisher, PostgresLogBus):
                if messages:
                    await publisher.append(conn, messages)
            else:
                await publisher.publish_raw(messages)
            await _record(conn, dlq_topic, plan.publish, published=True)
            await _record(conn, dlq_topic, plan.covered, published=False)
    return ReplayReport(
        dry_run=dry_run,
        published=plan.publish,
        covered=plan.covered,
        already=plan.already,
        unreplayable=plan.unreplayable,
        missing=missing,
    )


async def _record(
    conn: Connection, dlq_topic: str, letters: Sequence[DeadLetter], *, published: bool
) -> None:
    rows = [
        (
            dlq_topic,
            letter.id.partition,
            letter.id.offset,
            letter.source.topic,
            letter.source.partition,
            letter.source.offset,
            letter.consumer_group,
            published,
        )
        for letter in letters
        if letter.source is not None
    ]
    if rows:
        await conn.executemany(
            """INSERT INTO runtime_dlq_replays (dlq_topic, dlq_partition, dlq_offset,
                   source_topic, source_partition, source_offset, consumer_group, published)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            rows,
        )
