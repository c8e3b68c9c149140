"""The transactional outbox: events a handler produces commit with the handler's effect.

With the embedded PostgreSQL log bus the events are appended straight to the log in the
same transaction. With Kafka they go to `runtime_outbox` and a relay publishes them,
deleting rows only after Kafka acknowledged them (acks=all). A crash between publish and
delete republishes the same events with the same ids; consumers' inboxes absorb that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from relance_events import Event
from relance_runtime.bus.ports import OutgoingMessage, Publisher
from relance_runtime.db import Connection
from relance_runtime.errors import BusUnavailable

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "relance_outbox"


class Outbox(Protocol):
    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None:
        """Stage `events` inside the caller's open transaction."""
        ...


class TableOutbox:
    """Stages messages in `runtime_outbox`; `OutboxRelay` ships them. The NOTIFY that
    follows carries `relay_token`, so the relay of the process that staged the rows is the
    one that wakes (see `OutboxRelay`)."""

    def __init__(self, to_message: Any, *, relay_token: str = "") -> None:
        self._to_message = to_message
        self._relay_token = relay_token

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None:
        if not events:
            return
        messages: list[OutgoingMessage] = [self._to_message(event) for event in events]
        await conn.executemany(
            """INSERT INTO runtime_outbox (topic, key, value, header_keys, header_values)
               VALUES ($1, $2, $3, $4, $5)""",
            [
                (
                    m.topic,
                    m.key,
                    m.value,
                    [k for k, _ in m.headers],
                    [v for _, v in m.headers],
                )
                for m in messages
            ],
        )
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, self._relay_token)


class OutboxRelay:
    """Publishes staged messages in insertion order, one relay at a time per database.

    Every process runs one. A relay wakes for the NOTIFY of rows its own process staged
    (the payload is its `token`; an empty payload wakes every relay), so a write costs one
    relay transaction, not one per process, and the rows leave from the process that just
    wrote them. A transaction-level lock lets one relay publish at a time, taking every
    row in id order whoever staged it. A woken relay waits for the lock (up to
    `lock_wait_s`) rather than giving up: the holder may have looked just before our rows
    committed, and they leave right after it, not a poll later. One that waited in vain
    looks again after `idle_s`; an idle one looks every `quiet_s` anyway, which also
    ships rows of a process that died before relaying them.
    """

    _RELAY_LOCK = 0x4F5554424F58  # "OUTBOX"

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        token: str = "",
        batch_size: int = 1000,
        idle_s: float = 0.05,
        quiet_s: float = 1.0,
        lock_wait_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._token = token
        self._batch_size = batch_size
        self._idle_s = idle_s
        self._quiet_s = quiet_s
        # One statement: the wait is bounded (a holder stuck on an unreachable bus must
        # not hold every relay), then the lock.
        self._take_lock = (
            f"SET LOCAL lock_timeout = '{max(1, round(lock_wait_s * 1000))}ms';"
            f" SELECT pg_advisory_xact_lock({self._RELAY_LOCK})"
        )
        self._lock_missed = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: PoolConnectionProxy | None = None
        self.healthy = True

    async def start(self) -> None:
        self._listener = await self._pool.acquire()
        await self._listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=15)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            await self._pool.release(self._listener)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if not payload or payload == self._token:
            self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch; return how many messages left the outbox."""
        try:
            moved = await self._relay_batch()
        except asyncpg.LockNotAvailableError:  # another relay held the lock too long
            self._lock_missed = True
            return 0
        self._lock_missed = False
        return moved

    async def _relay_batch(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._take_lock)
            rows = await conn.fetch(
                """SELECT id, topic, key, value, header_keys, header_values
                   FROM runtime_outbox ORDER BY id LIMIT $1""",
                self._batch_size,
            )
            if not rows:
                return 0
            await self._publisher.publish_raw(
                [
                    OutgoingMessage(
                        topic=r["topic"],
                        key=r["key"],
                        value=r["value"],
                        headers=tuple(zip(r["header_keys"], r["header_values"], strict=True)),
                    )
                    for r in rows
                ]
            )
            await conn.execute(
                "DELETE FROM runtime_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
            )
            return len(rows)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            # Cleared before looking, not after: a NOTIFY for rows committed while we
            # looked keeps the event set, and the wait below returns at once.
            self._wake.clear()
            try:
                moved = await self.relay_once()
                self.healthy = True
                backoff = 0.1
            except (BusUnavailable, OSError, asyncpg.PostgresError) as exc:
                self.healthy = False
                log.warning("outbox relay failed, retrying", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if moved == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(),
                        timeout=self._idle_s if self._lock_missed else self._quiet_s,
                    )
