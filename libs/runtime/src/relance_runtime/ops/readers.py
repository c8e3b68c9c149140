"""Reading the dead-letter topic without joining any consumer group (nothing is committed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from relance_runtime.bus.kafka import record_of
from relance_runtime.bus.ports import Record
from relance_runtime.ops.dead_letters import LetterId, OpsError
from relance_runtime.ops.kafka_meta import close_quietly as _close
from relance_runtime.ops.kafka_meta import partitions_of

# Per partition: [start, stop) offsets to read.
Ranges = dict[int, tuple[int, int]]


class DeadLetterReader(Protocol):
    async def newest(self, count: int | None) -> list[Record]:
        """The `count` most recent records (all when None), oldest first."""
        ...

    async def fetch(self, ids: Sequence[LetterId]) -> list[Record]:
        """The records at these places; places that hold nothing are left out."""
        ...

    async def size(self) -> int:
        """How many records the topic retains."""
        ...


def _oldest_first(records: Sequence[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.timestamp_ms, r.partition, r.offset))


class PostgresDeadLetterReader:
    """The DLQ topic of the PostgreSQL log bus (`bus_log`)."""

    def __init__(self, pool: asyncpg.Pool, topic: str) -> None:
        self._pool = pool
        self._topic = topic

    async def newest(self, count: int | None) -> list[Record]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT partition, "offset", key, value, header_keys, header_values, appended_at
                   FROM bus_log WHERE topic = $1
                   ORDER BY appended_at DESC, partition DESC, "offset" DESC
                   LIMIT $2""",
                self._topic,
                count,
            )
        return _oldest_first([self._record(r) for r in rows])

    async def fetch(self, ids: Sequence[LetterId]) -> list[Record]:
        if not ids:
            return []
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT l.partition, l."offset", l.key, l.value, l.header_keys,
                          l.header_values, l.appended_at
                   FROM unnest($2::int[], $3::bigint[]) AS w(partition, pos)
                   JOIN bus_log l
                     ON l.topic = $1 AND l.partition = w.partition AND l."offset" = w.pos""",
                self._topic,
                [i.partition for i in ids],
                [i.offset for i in ids],
            )
        return _oldest_first([self._record(r) for r in rows])

    async def size(self) -> int:
        async with self._pool.acquire() as conn:
            return int(
                await conn.fetchval("SELECT count(*) FROM bus_log WHERE topic = $1", self._topic)
            )

    def _record(self, row: asyncpg.Record) -> Record:
        return Record(
            topic=self._topic,
            partition=row["partition"],
            offset=row["offset"],
            key=row["key"],
            value=row["value"],
            headers=tuple(zip(row["header_keys"], row["header_values"], strict=True)),
            timestamp_ms=int(row["appended_at"].timestamp() * 1000),
        )


class KafkaDeadLetterReader:
    """The DLQ topic on Kafka, read by assignment (no group, no commit)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        client_id: str = "relance-ops",
        timeout_s: float = 30.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._client_id = client_id
        self._timeout_s = timeout_s

    async def newest(self, count: int | None) -> list[Record]:
        def window(begin: Mapping[int, int], end: Mapping[int, int]) -> Ranges:
            return {
                p: (begin[p] if count is None else max(begin[p], end[p] - count), end[p])
                for p in end
            }

        records = _oldest_first(await self._read(window))
        return records if count is None else records[len(records) - count :]

    async def fetch(self, ids: Sequence[LetterId]) -> list[Record]:
        if not ids:
            return []
        wanted = {(i.partition, i.offset) for i in ids}

        def window(begin: Mapping[int, int], end: Mapping[int, int]) -> Ranges:
            ranges: Ranges = {}
            for p in end:
                offsets = [o for q, o in wanted if q == p and begin[p] <= o < end[p]]
                if offsets:
                    ranges[p] = (min(offsets), max(offsets) + 1)
            return ranges

        return _oldest_first(
            [r for r in await self._read(window) if (r.partition, r.offset) in wanted]
        )

    async def size(self) -> int:
        total = 0

        def window(begin: Mapping[int, int], end: Mapping[int, int]) -> Ranges:
            nonlocal total
            total = sum(end[p] - begin[p] for p in end)
            return {}

        await self._read(window)
        return total

    async def _read(
        self, window: Callable[[Mapping[int, int], Mapping[int, int]], Ranges]
    ) -> list[Record]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        try:
            await asyncio.wait_for(
                asyncio.gather(admin.start(), consumer.start()), timeout=self._timeout_s
            )
        except (KafkaError, TimeoutError) as exc:
            await _close(admin, consumer)
            raise OpsError(f"Kafka at {self._bootstrap} is unreachable: {exc!r}") from exc
        try:
            return await asyncio.wait_for(self._read_with(admin, consumer, window), self._timeout_s)
        except TimeoutError as exc:
            raise OpsError(f"reading {self._topic} took longer than {self._timeout_s} s") from exc
        except KafkaError as exc:
            raise OpsError(f"reading {self._topic} failed: {exc!r}") from exc
        finally:
            await _close(admin, consumer)

    async def _read_with(
        self,
        admin: AIOKafkaAdminClient,
        consumer: AIOKafkaConsumer,
        window: Callable[[Mapping[int, int], Mapping[int, int]], Ranges],
    ) -> list[Record]:
        partitions = (await partitions_of(admin, [self._topic])).get(self._topic, [])
        if not partitions:
            return []
        tps = [KafkaTopicPartition(self._topic, p) for p in partitions]
        begin = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
        end = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        ranges = {p: r for p, r in window(begin, end).items() if r[0] < r[1]}
        if not ranges:
            return []
        consumer.assign([KafkaTopicPartition(self._topic, p) for p in ranges])
        for p, (start, _) in ranges.items():
            consumer.seek(KafkaTopicPartition(self._topic, p), start)
        records: list[Record] = []
        remaining = dict(ranges)
        while remaining:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, messages in batches.items():
                _, stop = ranges[tp.partition]
                records.extend(record_of(m) for m in messages if m.offset < stop)
            for p, (_, stop) in list(remaining.items()):
                tp = KafkaTopicPartition(self._topic, p)
                # Positions, not offsets seen: transaction markers leave gaps.
                if await consumer.position(tp) >= stop:
                    del remaining[p]
                    consumer.pause(tp)
        return records
