"""What every process shares, built once by its composition root: database, bus, clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from relance_events import Event
from relance_events.topics import DEAD_LETTERS, Topic
from relance_runtime.auth import (
    CachedKeyStore,
    ChainedKeyStore,
    KeyStore,
    PostgresKeyStore,
    StaticKeyStore,
)
from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.ports import Bus
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.clock import Clock, SystemClock
from relance_runtime.consumer import BatchHandler, ConsumerLoop
from relance_runtime.db import Connection, create_pool, migrate, start_embedded_postgres
from relance_runtime.errors import BusUnavailable
from relance_runtime.outbox import Outbox, OutboxRelay, TableOutbox
from relance_runtime.registry import SUBSCRIPTIONS, ServiceName, Subscription
from relance_runtime.settings import CommonSettings
from relance_runtime.tokens import TokenSigner

log = logging.getLogger(__name__)


class LogOutbox:
    """With the PostgreSQL log bus, produced events join the handler's own transaction."""

    def __init__(self, bus: PostgresLogBus) -> None:
        self._bus = bus

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None:
        if events:
            await self._bus.append(conn, [to_message(e, self._bus.names) for e in events])


@dataclass
class Platform:
    settings: CommonSettings
    dsn: str
    pool: asyncpg.Pool
    bus: Bus
    outbox: Outbox
    clock: Clock
    names: TopicNames
    tokens: TokenSigner
    keys: KeyStore
    relay: OutboxRelay | None = None
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        if self.relay is not None:
            await self.relay.stop()
        await self.bus.stop()
        await self.pool.close()

    def consumer_loop(
        self,
        group: str,
        topics: Sequence[Topic],
        handler: BatchHandler,
        *,
        event_types: frozenset[str] | None = None,
    ) -> ConsumerLoop:
        """A consumer loop wired to this process's bus, dead-letter topic and settings."""
        return ConsumerLoop(
            self.bus,
            group=group,
            topics=[self.names.of(t) for t in topics],
            handler=handler,
            dead_letter_topic=self.names.of(DEAD_LETTERS),
            batch_size=self.settings.consumer_batch_size,
            drain_timeout_s=self.settings.drain_timeout_s,
            event_types=event_types,
            commit_interval_s=self.settings.consumer_commit_interval_s,
        )

    def consumers_for(
        self,
        service: ServiceName,
        handler: BatchHandler,
        *,
        reads: frozenset[str] | None = None,
    ) -> list[ConsumerLoop]:
        """One consumer loop per subscription of `service` (the registry's groups, topics
        and event types). `reads` narrows the event types further: the service knows what
        it reads (an orchestrator, from its plans), and the rest is skipped undecoded."""
        return [
            self.consumer_loop(s.group, s.topics, handler, event_types=narrowed(s, reads))
            for s in SUBSCRIPTIONS[service]
        ]

    async def ready(self) -> dict[str, bool]:
        try:
            async with self.pool.acquire() as conn:
                db_ok = bool(await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=3))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            db_ok = False
        checks = {"database": db_ok, "bus": await self.bus.ping()}
        if self.relay is not None:
            checks["outbox_relay"] = self.relay.healthy
        return checks


def narrowed(subscription: Subscription, reads: frozenset[str] | None) -> frozenset[str] | None:
    """The event types a subscription's loop hands over: both filters (None is all)."""
    if reads is None:
        return subscription.event_types
    if subscription.event_types is None:
        return reads
    return subscription.event_types & reads


def resolve_dsn(settings: CommonSettings) -> str:
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(settings.database_dir())


async def start_platform(settings: CommonSettings, *, client_id: str) -> Platform:
    dsn = await asyncio.to_thread(resolve_dsn, settings)
    pool = await create_pool(dsn, max_size=settings.db_pool_max)
    async with pool.acquire() as conn:
        await migrate(conn)
    names = TopicNames(settings.topic_prefix)
    clock = SystemClock(settings.clock_offset_file)
    tokens = TokenSigner.from_setting(settings.token_keys)
    keys = CachedKeyStore(
        ChainedKeyStore(
            StaticKeyStore.from_settings(settings.write_keys, settings.admin_keys),
            PostgresKeyStore(pool),
        )
    )
    relay: OutboxRelay | None = None
    background: list[asyncio.Task[None]] = []
    bus: Bus
    outbox: Outbox
    if settings.bus == "kafka":
        kafka = KafkaBus(settings.kafka_bootstrap, client_id=client_id, names=names)
        try:
            await kafka.start()
            await kafka.ensure_topics()
        except BusUnavailable as exc:
            # Start anyway: readiness reports the broker, and everything retries on its own.
            log.warning("Kafka unavailable at start", extra={"error": str(exc)})
            background.append(asyncio.create_task(_ensure_topics_later(kafka)))
        bus = kafka
        # This process's relay ships what this process stages (NOTIFY payload).
        token = f"{client_id}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        outbox = TableOutbox(lambda event: to_message(event, names), relay_token=token)
        relay = OutboxRelay(pool, kafka, token=token)
        await relay.start()
    else:
        log_bus = PostgresLogBus(pool, dsn, names=names)
        await log_bus.start()
        bus = log_bus
        outbox = LogOutbox(log_bus)
    return Platform(
        settings=settings,
        dsn=dsn,
        pool=pool,
        bus=bus,
        outbox=outbox,
        clock=clock,
        names=names,
        tokens=tokens,
        keys=keys,
        relay=relay,
        _background=background,
    )


async def _ensure_topics_later(bus: KafkaBus) -> None:
    delay = 1.0
    while True:
        await asyncio.sleep(delay)
        with contextlib.suppress(BusUnavailable):
            await bus.ensure_topics()
            log.info("Kafka reachable again; topics ensured")
            return
        delay = min(delay * 2, 30.0)
