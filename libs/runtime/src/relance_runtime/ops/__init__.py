"""Operations tooling: dead letters (list, replay), consumer lag and backlogs.

`open_ops(CommonSettings())` connects to what the settings name (PostgreSQL, and Kafka or the
PostgreSQL log); `Ops.on_kafka` / `Ops.on_postgres` wire it from parts (tests, embedding).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from relance_events.topics import DEAD_LETTERS
from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.messages import TopicNames
from relance_runtime.bus.ports import OutgoingMessage, Publisher
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.db import create_pool
from relance_runtime.ops.dead_letters import DeadLetter, LetterId, OpsError, Replay
from relance_runtime.ops.dlq import ReplayReport, list_dead_letters, replay_dead_letters
from relance_runtime.ops.readers import (
    DeadLetterReader,
    KafkaDeadLetterReader,
    PostgresDeadLetterReader,
)
from relance_runtime.ops.status import Backlog, PartitionLag, backlog, kafka_lag, postgres_lag
from relance_runtime.settings import CommonSettings


@dataclass(frozen=True, slots=True)
class StatusReport:
    bus: str
    lag: tuple[PartitionLag, ...] | None
    lag_error: str | None
    backlog: Backlog
    dead_letters_retained: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "bus": self.bus,
            "lag": None
            if self.lag is None
            else [
                {
                    "service": x.service,
                    "group": x.group,
                    "topic": x.topic,
                    "partition": x.partition,
                    "committed": x.committed,
                    "end": x.end,
                    "lag": x.lag,
                }
                for x in self.lag
            ],
            "lag_error": self.lag_error,
            "backlog": self.backlog.as_json(),
            "dead_letters_retained": self.dead_letters_retained,
        }


@dataclass(frozen=True, slots=True)
class Ops:
    bus: Literal["kafka", "postgres"]
    pool: asyncpg.Pool
    names: TopicNames
    reader: DeadLetterReader
    publisher: Publisher
    lag_source: Callable[[], Awaitable[list[PartitionLag]]]

    @classmethod
    def on_kafka(
        cls, pool: asyncpg.Pool, names: TopicNames, bootstrap: str, publisher: Publisher
    ) -> Ops:
        return cls(
            bus="kafka",
            pool=pool,
            names=names,
            reader=KafkaDeadLetterReader(bootstrap, names.of(DEAD_LETTERS)),
            publisher=publisher,
            lag_source=lambda: kafka_lag(bootstrap, names),
        )

    @classmethod
    def on_postgres(cls, pool: asyncpg.Pool, bus: PostgresLogBus) -> Ops:
        return cls(
            bus="postgres",
            pool=pool,
            names=bus.names,
            reader=PostgresDeadLetterReader(pool, bus.names.of(DEAD_LETTERS)),
            publisher=bus,
            lag_source=lambda: postgres_lag(pool, bus.names),
        )

    @property
    def dlq_topic(self) -> str:
        return self.names.of(DEAD_LETTERS)

    async def dead_letters(
        self, *, limit: int | None = 50, pending_only: bool = False
    ) -> list[DeadLetter]:
        return await list_dead_letters(
            self.pool, self.reader, self.dlq_topic, limit=limit, pending_only=pending_only
        )

    async def replay(
        self, ids: Sequence[LetterId] | None = None, *, dry_run: bool = False
    ) -> ReplayReport:
        """Replay these dead letters, or every one not replayed yet when `ids` is None."""
        topics = {name for name, _ in self.names.all()} - {self.dlq_topic}
        return await replay_dead_letters(
            self.pool,
            self.reader,
            self.publisher,
            self.dlq_topic,
            topics=topics,
            ids=ids,
            dry_run=dry_run,
        )

    async def lag(self) -> list[PartitionLag]:
        return await self.lag_source()

    async def status(self, now: datetime) -> StatusReport:
        """Everything `relance status` shows; a broker that is away is reported, not raised."""
        lag: tuple[PartitionLag, ...] | None = None
        lag_error: str | None = None
        retained: int | None = None
        try:
            lag = tuple(await self.lag())
            retained = await self.reader.size()
        except OpsError as exc:
            lag_error = str(exc)
        return StatusReport(
            bus=self.bus,
            lag=lag,
            lag_error=lag_error,
            backlog=await backlog(self.pool, now, self.dlq_topic),
            dead_letters_retained=retained,
        )


class _KafkaOnDemand:
    """A Kafka producer started on first publish: listing needs no producer."""

    def __init__(self, bus: KafkaBus) -> None:
        self.bus = bus
        self.started = False

    async def publish(self, events: Sequence[Any]) -> None:
        await self._live()
        await self.bus.publish(events)

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        await self._live()
        await self.bus.publish_raw(messages)

    async def _live(self) -> None:
        if not self.started:
            await self.bus.start()
            self.started = True


@contextlib.asynccontextmanager
async def open_ops(
    settings: CommonSettings, *, client_id: str = "relance-ops"
) -> AsyncIterator[Ops]:
    """Connect to the database and bus that `settings` name (RELANCE_* variables)."""
    from relance_runtime.platform import resolve_dsn  # the embedded server only if needed

    dsn = resolve_dsn(settings)
    names = TopicNames(settings.topic_prefix)
    pool = await create_pool(dsn, min_size=1, max_size=3)
    try:
        if settings.bus == "kafka":
            producer = _KafkaOnDemand(
                KafkaBus(settings.kafka_bootstrap, client_id=client_id, names=names)
            )
            try:
                yield Ops.on_kafka(pool, names, settings.kafka_bootstrap, producer)
            finally:
                if producer.started:
                    await producer.bus.stop()
        else:
            yield Ops.on_postgres(pool, PostgresLogBus(pool, dsn, names=names))
    finally:
        await pool.close()


__all__ = [
    "Backlog",
    "DeadLetter",
    "LetterId",
    "Ops",
    "OpsError",
    "PartitionLag",
    "Replay",
    "ReplayReport",
    "StatusReport",
    "open_ops",
]
