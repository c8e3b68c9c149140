"""`relance status`: consumer lag per group and partition, and the services' backlogs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from relance_runtime.bus.messages import TopicNames
from relance_runtime.db import Connection
from relance_runtime.ops.dead_letters import OpsError
from relance_runtime.ops.kafka_meta import close_quietly as _close
from relance_runtime.ops.kafka_meta import partitions_of
from relance_runtime.registry import SUBSCRIPTIONS, ServiceName, Subscription


@dataclass(frozen=True, slots=True)
class PartitionLag:
    service: str
    group: str  # physical (prefixed) group id
    topic: str
    partition: int
    committed: int | None  # next offset the group will read; None: never committed
    log_start: int
    end: int

    @property
    def lag(self) -> int:
        """Records the group has yet to read (uncommitted groups start at the log start)."""
        position = self.log_start if self.committed is None else max(self.committed, self.log_start)
        return max(0, self.end - position)


def _groups(
    names: TopicNames, subscriptions: Mapping[ServiceName, Sequence[Subscription]]
) -> list[tuple[str, str, list[str]]]:
    return [
        (service, names.group(sub.group), [names.of(t) for t in sub.topics])
        for service, subs in subscriptions.items()
        for sub in subs
    ]


async def postgres_lag(
    pool: asyncpg.Pool,
    names: TopicNames,
    subscriptions: Mapping[ServiceName, Sequence[Subscription]] = SUBSCRIPTIONS,
) -> list[PartitionLag]:
    """Lag on the PostgreSQL log: `bus_group_offsets` against `bus_partitions.next_offset`."""
    out: list[PartitionLag] = []
    async with pool.acquire() as conn:
        for service, group, topics in _groups(names, subscriptions):
            rows = await conn.fetch(
                """SELECT p.topic, p.partition, p.next_offset, o.next_offset AS committed,
                          coalesce((SELECT l."offset" FROM bus_log l
                                    WHERE l.topic = p.topic AND l.partition = p.partition
                                    ORDER BY l."offset" LIMIT 1), p.next_offset) AS log_start
                   FROM bus_partitions p
                   LEFT JOIN bus_group_offsets o
                     ON o.group_id = $1 AND o.topic = p.topic AND o.partition = p.partition
                   WHERE p.topic = ANY($2::text[])
                   ORDER BY p.topic, p.partition""",
                group,
                topics,
            )
            out.extend(
                PartitionLag(
                    service=service,
                    group=group,
                    topic=r["topic"],
                    partition=r["partition"],
                    committed=r["committed"],
                    log_start=r["log_start"],
                    end=r["next_offset"],
                )
                for r in rows
            )
    return out


async def kafka_lag(
    bootstrap: str,
    names: TopicNames,
    subscriptions: Mapping[ServiceName, Sequence[Subscription]] = SUBSCRIPTIONS,
    *,
    client_id: str = "relance-ops",
    timeout_s: float = 30.0,
) -> list[PartitionLag]:
    """Lag on Kafka: each group's committed offsets against the partitions' end offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, client_id=client_id, enable_auto_commit=False
    )
    try:
        await asyncio.wait_for(asyncio.gather(admin.start(), consumer.start()), timeout_s)
    except (KafkaError, TimeoutError) as exc:
        await _close(admin, consumer)
        raise OpsError(f"Kafka at {bootstrap} is unreachable: {exc!r}") from exc
    try:
        return await asyncio.wait_for(
            _kafka_lag(admin, consumer, _groups(names, subscriptions)), timeout_s
        )
    except (KafkaError, TimeoutError) as exc:
        raise OpsError(f"could not read consumer offsets from Kafka: {exc!r}") from exc
    finally:
        await _close(admin, consumer)


async def _kafka_lag(
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    groups: Sequence[tuple[str, str, list[str]]],
) -> list[PartitionLag]:
    partitions = await partitions_of(admin, sorted({t for _, _, ts in groups for t in ts}))
    out: list[PartitionLag] = []
    for service, group, topics in groups:
        tps = [KafkaTopicPartition(t, p) for t in topics for p in partitions.get(t, ())]
        if not tps:
            continue
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            out.append(
                PartitionLag(
                    service=service,
                    group=group,
                    topic=tp.topic,
                    partition=tp.partition,
                    committed=offset,
                    log_start=begin[tp],
                    end=end[tp],
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class Backlog:
    """Counts from the services' tables; None where that service's table does not exist."""

    timers_due: int | None
    timers_pending: int | None
    timers_parked: int | None
    ambiguous_sends: int | None
    failed_alerts: int | None
    pending_alerts: int | None
    dead_letters_replayed: int | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def _table(conn: Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def _column(conn: Connection, table: str, column: str) -> bool:
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM information_schema.columns
                              WHERE table_schema = current_schema()
                                AND table_name = $1 AND column_name = $2)""",
            table,
            column,
        )
    )


async def backlog(pool: asyncpg.Pool, now: datetime, dlq_topic: str) -> Backlog:
    """Timer backlog, ambiguous sends, support alerts and replayed dead letters.

    The tables belong to services that may not be deployed (or migrated) here, so each is
    looked up first.
    """
    async with pool.acquire() as conn:
        due = pending = parked = ambiguous = failed = alerts = replayed = None
        if await _table(conn, "orchestrator_timers"):
            if await _column(conn, "orchestrator_timers", "state"):
                row = await conn.fetchrow(
                    """SELECT count(*) FILTER (WHERE state = 'pending' AND due_at <= $1) AS due,
                              count(*) FILTER (WHERE state = 'pending') AS pending,
                              count(*) FILTER (WHERE state = 'parked') AS parked
                       FROM orchestrator_timers""",
                    now,
                )
            else:
                row = await conn.fetchrow(
                    """SELECT count(*) FILTER (WHERE due_at <= $1) AS due,
                              count(*) AS pending, 0 AS parked
                       FROM orchestrator_timers""",
                    now,
                )
            assert row is not None
            due, pending, parked = int(row["due"]), int(row["pending"]), int(row["parked"])
        if await _table(conn, "sender_ledger"):
            ambiguous = int(
                await conn.fetchval("SELECT count(*) FROM sender_ledger WHERE state = 'ambiguous'")
            )
        if await _table(conn, "feedback_alerts"):
            row = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE state = 'failed') AS failed,
                          count(*) FILTER (WHERE state = 'pending') AS pending
                   FROM feedback_alerts"""
            )
            assert row is not None
            failed, alerts = int(row["failed"]), int(row["pending"])
        if await _table(conn, "runtime_dlq_replays"):
            replayed = int(
                await conn.fetchval(
                    "SELECT count(*) FROM runtime_dlq_replays WHERE dlq_topic = $1", dlq_topic
                )
            )
    return Backlog(
        timers_due=due,
        timers_pending=pending,
        timers_parked=parked,
        ambiguous_sends=ambiguous,
        failed_alerts=failed,
        pending_alerts=alerts,
        dead_letters_replayed=replayed,
    )
