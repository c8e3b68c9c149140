"""The embedded bus: a durable, partitioned log in PostgreSQL, read by consumer groups.

Semantics match what services rely on from Kafka:
- Appending takes the partition's row lock until commit, so offsets are gapless and become
  visible in order; a publish returns only after the append committed (durable).
- A topic has a fixed number of partitions and the same key always maps to the same
  partition (Kafka's murmur2), so one contact's events stay ordered.
- Members of a group share partitions. A member owns a partition while it holds a session
  advisory lock on it; if its process dies, PostgreSQL drops the lock with the connection
  and a live member takes the partition over from the last committed offset. Live members
  (heartbeat within the session timeout) split partitions round-robin by member id.
- Offsets are committed explicitly; uncommitted records are redelivered to the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from relance_events import Publishable
from relance_runtime.bus.messages import TopicNames, partition_for, to_message
from relance_runtime.bus.ports import BusConsumer, OutgoingMessage, Record, TopicPartition
from relance_runtime.db import Connection
from relance_runtime.errors import BusUnavailable, RebalancedAway, TransientError

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "relance_bus"
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


class PostgresLogBus:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        names: TopicNames | None = None,
        session_timeout_s: float = 10.0,
        heartbeat_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self.names = names or TopicNames()
        self._partitions = {name: topic.partitions for name, topic in self.names.all()}
        self._session_timeout_s = session_timeout_s
        self._heartbeat_s = heartbeat_s
        self._round_robin = 0

    async def start(self) -> None:
        await self.ensure_topics()

    async def stop(self) -> None:
        return None

    def declare_topic(self, name: str, partitions: int) -> None:
        """Add a topic outside the registry (tests, tools)."""
        self._partitions[name] = partitions

    async def ensure_topics(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.executemany(
                    """INSERT INTO bus_partitions (topic, partition)
                       SELECT $1, p FROM generate_series(0, $2 - 1) AS p
                       ON CONFLICT DO NOTHING""",
                    list(self._partitions.items()),
                )
        except _CONNECTION_ERRORS as exc:
            raise BusUnavailable(f"PostgreSQL bus unavailable: {exc}") from exc

    async def publish(self, events: Sequence[Publishable]) -> None:
        await self.publish_raw([to_message(e, self.names) for e in events])

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await self.append(conn, messages)
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise BusUnavailable(f"PostgreSQL bus did not take the batch: {exc}") from exc

    async def append(self, conn: Connection, messages: Sequence[OutgoingMessage]) -> None:
        """Append inside the caller's transaction (the outbox uses this for exactly-once)."""
        by_partition: dict[tuple[str, int], list[OutgoingMessage]] = {}
        for m in messages:
            partitions = self._partitions.get(m.topic)
            if partitions is None:
                raise BusUnavailable(f"unknown topic {m.topic!r}")
            self._round_robin += 1
            p = partition_for(m.key, partitions, self._round_robin)
            by_partition.setdefault((m.topic, p), []).append(m)
        rows: list[tuple[Any, ...]] = []
        # Lock partitions in a fixed order so concurrent appenders never deadlock.
        for (topic, partition), batch in sorted(by_partition.items()):
            end = await conn.fetchval(
                """UPDATE bus_partitions SET next_offset = next_offset + $3
                   WHERE topic = $1 AND partition = $2 RETURNING next_offset""",
                topic,
                partition,
                len(batch),
            )
            if end is None:
                raise BusUnavailable(f"topic {topic!r} has no partition {partition}")
            start = end - len(batch)
            for i, m in enumerate(batch):
                rows.append(
                    (
                        topic,
                        partition,
                        start + i,
                        m.key,
                        m.value,
                        [k for k, _ in m.headers],
                        [v for _, v in m.headers],
                    )
                )
        await conn.copy_records_to_table(
            "bus_log",
            records=rows,
            columns=[
                "topic",
                "partition",
                "offset",
                "key",
                "value",
                "header_keys",
                "header_values",
            ],
        )
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)

    async def ping(self) -> bool:
        try:
            async with self._pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT 1"))
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError):
            return False

    def consumer(self, group: str, topics: Sequence[str]) -> BusConsumer:
        missing = [t for t in topics if t not in self._partitions]
        if missing:
            raise ValueError(f"unknown topics {missing}")
        return PostgresLogConsumer(
            self._dsn,
            group=self.names.group(group),
            partitions=[TopicPartition(t, p) for t in topics for p in range(self._partitions[t])],
            session_timeout_s=self._session_timeout_s,
            heartbeat_s=self._heartbeat_s,
        )

    async def purge_older_than(self, days: int) -> int:
        """Retention: drop log rows older than `days` (the Kafka topics' retention)."""
        async with self._pool.acquire() as conn:
            result = await conn.execute(
                "DELETE FROM bus_log WHERE appended_at < now() - make_interval(days => $1)", days
            )
        return int(result.split()[-1])


def _lock_key(group: str, tp: TopicPartition) -> int:
    digest = zlib.crc32(f"{group}\x1f{tp.topic}\x1f{tp.partition}".encode())
    return (0x42555300 << 32 | digest) - (1 << 63)  # signed 64-bit, namespaced "BUS"


class PostgresLogConsumer:
    def __init__(
        self,
        dsn: str,
        *,
        group: str,
        partitions: list[TopicPartition],
        session_timeout_s: float,
        heartbeat_s: float,
    ) -> None:
        self._dsn = dsn
        self.group = group
        self.member_id = uuid.uuid4().hex
        self._all = sorted(partitions, key=lambda tp: (tp.topic, tp.partition))
        self._session_timeout_s = session_timeout_s
        self._heartbeat_s = heartbeat_s
        self._session: asyncpg.Connection | None = None
        self._owned: dict[TopicPartition, int] = {}  # partition -> next offset to fetch
        self._wake = asyncio.Event()
        self._last_heartbeat = 0.0

    async def start(self) -> None:
        try:
            # A dedicated session: advisory locks and LISTEN live and die with it.
            self._session = await asyncpg.connect(self._dsn)
            await self._session.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except _CONNECTION_ERRORS as exc:
            raise TransientError(f"bus consumer could not connect: {exc}") from exc
        await self._heartbeat(force=True)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _heartbeat(self, *, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._last_heartbeat < self._heartbeat_s:
            return
        self._last_heartbeat = loop.time()
        session = self._require_session()
        members: list[str] = [
            r["member_id"]
            for r in await session.fetch(
                """WITH beat AS (
                       INSERT INTO bus_group_members (group_id, member_id) VALUES ($1, $2)
                       ON CONFLICT (group_id, member_id) DO UPDATE SET heartbeat_at = now())
                   SELECT member_id FROM bus_group_members
                   WHERE group_id = $1
                     AND heartbeat_at > now() - make_interval(secs => $3)
                   ORDER BY member_id""",
                self.group,
                self.member_id,
                self._session_timeout_s,
            )
        ]
        if self.member_id not in members:
            members = sorted([*members, self.member_id])
        me = members.index(self.member_id)
        wanted = {tp for i, tp in enumerate(self._all) if i % len(members) == me}
        for tp in [tp for tp in self._owned if tp not in wanted]:
            await session.execute("SELECT pg_advisory_unlock($1)", _lock_key(self.group, tp))
            del self._owned[tp]
            log.info("partition released", extra={"group": self.group, "partition": str(tp)})
        for tp in wanted - set(self._owned):
            if await session.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(self.group, tp)):
                committed = await session.fetchval(
                    """SELECT next_offset FROM bus_group_offsets
                       WHERE group_id = $1 AND topic = $2 AND partition = $3""",
                    self.group,
                    tp.topic,
                    tp.partition,
                )
                self._owned[tp] = int(committed or 0)
                log.info("partition assigned", extra={"group": self.group, "partition": str(tp)})

    def _require_session(self) -> asyncpg.Connection:
        if self._session is None or self._session.is_closed():
            raise TransientError("bus consumer session is closed")
        return self._session

    async def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                await self._heartbeat()
                self._wake.clear()
                records = await self._fetch(max_records)
                remaining = deadline - loop.time()
                if records or remaining <= 0:
                    return records
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=min(remaining, self._heartbeat_s)
                    )
        except _CONNECTION_ERRORS as exc:
            self._owned.clear()  # the locks died with the session
            raise TransientError(f"bus poll failed: {exc}") from exc

    async def _fetch(self, max_records: int) -> list[Record]:
        if not self._owned:
            return []
        owned = list(self._owned.items())
        rows = await self._require_session().fetch(
            """SELECT l.topic, l.partition, l."offset", l.key, l.value,
                      l.header_keys, l.header_values, l.appended_at
               FROM unnest($1::text[], $2::int[], $3::bigint[]) AS a(topic, partition, pos)
               CROSS JOIN LATERAL (
                   SELECT * FROM bus_log b
                   WHERE b.topic = a.topic AND b.partition = a.partition AND b."offset" >= a.pos
                   ORDER BY b."offset" LIMIT $4) AS l
               ORDER BY l.appended_at, l.topic, l.partition, l."offset"
               LIMIT $4""",
            [tp.topic for tp, _ in owned],
            [tp.partition for tp, _ in owned],
            [pos for _, pos in owned],
            max_records,
        )
        records = [
            Record(
                topic=r["topic"],
                partition=r["partition"],
                offset=r["offset"],
                key=r["key"],
                value=r["value"],
                headers=tuple(zip(r["header_keys"], r["header_values"], strict=True)),
                timestamp_ms=int(r["appended_at"].timestamp() * 1000),
            )
            for r in rows
        ]
        for record in records:
            self._owned[record.tp] = max(self._owned.get(record.tp, 0), record.offset + 1)
        return records

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        lost = [tp for tp in offsets if tp not in self._owned]
        if lost:
            raise RebalancedAway(f"partitions no longer owned: {sorted(map(str, lost))}")
        try:
            await self._require_session().executemany(
                """INSERT INTO bus_group_offsets (group_id, topic, partition, next_offset)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (group_id, topic, partition)
                   DO UPDATE SET next_offset = GREATEST(bus_group_offsets.next_offset,
                                                        EXCLUDED.next_offset),
                                 updated_at = now()""",
                [(self.group, tp.topic, tp.partition, o) for tp, o in offsets.items()],
            )
        except _CONNECTION_ERRORS as exc:
            self._owned.clear()
            raise TransientError(f"commit failed: {exc}") from exc

    async def stop(self) -> None:
        if self._session is None:
            return
        with contextlib.suppress(*_CONNECTION_ERRORS, asyncpg.PostgresError):
            await self._session.execute(
                "DELETE FROM bus_group_members WHERE group_id = $1 AND member_id = $2",
                self.group,
                self.member_id,
            )
        with contextlib.suppress(Exception):
            await self._session.close()  # releases every advisory lock at once
        self._session = None
        self._owned.clear()

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._owned)
