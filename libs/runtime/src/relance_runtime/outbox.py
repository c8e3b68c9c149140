"""The transactional outbox: events a handler produces commit with the handler's effect.

With the embedded PostgreSQL log bus the events are appended straight to the log in the
same transaction. With Kafka they go to `runtime_outbox` and a relay publishes them,
deleting rows only after Kafka acknowledged them (acks=all). A crash between publish and
delete republishes the same events with the same ids; consumers' inboxes absorb that.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Sequence
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


def lane_lock(topic: str) -> int:
    """The advisory lock of a topic's lane: a stable signed 64-bit hash of its name."""
    digest = hashlib.blake2b(f"relance-outbox:{topic}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _notify_payload(token: str, topics: Iterable[str]) -> str:
    return "\n".join([token, *sorted(topics)])


class TableOutbox:
    """Stages messages in `runtime_outbox`; `OutboxRelay` ships them. The NOTIFY that
    follows carries `relay_token` and the topics staged, so the relay of the process that
    staged the rows is the one that wakes, and knows which lanes to look at (see
    `OutboxRelay`)."""

    def __init__(self, to_message: Any, *, relay_token: str = "") -> None:
        self._to_message = to_message
        self._relay_token = relay_token

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None:
        if not events:
            return
        messages: list[OutgoingMessage] = [self._to_message(event) for event in events]
        wake = _notify_payload(self._relay_token, {m.topic for m in messages})
        # The NOTIFY rides on the insert (one round trip): PostgreSQL delivers the same
        # payload signalled several times in a transaction once, at commit.
        await conn.executemany(
            """INSERT INTO runtime_outbox (topic, key, value, header_keys, header_values)
               VALUES ($1, $2, $3, $4, $5) RETURNING pg_notify($6, $7)""",
            [
                (
                    m.topic,
                    m.key,
                    m.value,
                    [k for k, _ in m.headers],
                    [v for _, v in m.headers],
                    NOTIFY_CHANNEL,
                    wake,
                )
                for m in messages
            ],
        )


class OutboxRelay:
    """Publishes staged messages in insertion order, one lane (topic) at a time.

    Every process runs one. A relay wakes for the NOTIFY of rows its own process staged
    (the payload is its `token`, then the topics staged; an empty token wakes every
    relay), so a write costs one relay transaction, not one per process, and the rows
    leave from the process that just wrote them.

    Each topic is a lane with its own transaction-level lock: one relay at a time
    publishes a topic's rows, all of them in id order whoever staged them, so a key's
    messages keep their order; lanes do not wait for each other (the orchestrator's
    requests never queue behind segmentation's changes). Every relay also holds a shared
    lock that the relays of earlier versions took exclusively, so during an upgrade the
    two kinds never publish at once.

    A woken relay waits for a lane's lock (up to `lock_wait_s`) rather than giving up: the
    holder may have looked just before our rows committed, and they leave right after it,
    not a poll later. One that waited in vain looks again after `idle_s`; an idle one
    looks at every lane every `quiet_s` anyway, which also ships rows of a process that
    died before relaying them.
    """

    # Taken exclusively by relays before lanes: shared now, so one of those excludes all.
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
        # One round trip: the wait is bounded (a holder stuck on an unreachable bus must
        # not hold a lane for good), then the locks.
        self._take_lock = (
            f"SET LOCAL lock_timeout = '{max(1, round(lock_wait_s * 1000))}ms';"
            f" SELECT pg_advisory_xact_lock_shared({self._RELAY_LOCK}),"
            " pg_advisory_xact_lock({lane})"
        )
        # Lanes to look at: NOTIFYs add to it; missed (lock not available) lanes stay.
        self._lanes: set[str] = set()
        self._everything = True  # the first look, and one every quiet_s, covers every lane
        self._looked_everywhere = 0.0
        self._full_batch = False
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
        listener, self._listener = self._listener, None  # stopping twice is stopping once
        if listener is not None:
            try:
                await listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            except Exception:  # still listening: not a session to hand to anyone else
                listener.terminate()
            await self._pool.release(listener)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        token, *topics = str(payload or "").split("\n")
        if not token or token == self._token:
            if topics:
                self._lanes.update(topics)
            else:  # a payload without topics: look everywhere
                self._everything = True
            self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of every lane there is to look at; return how many messages
        left the outbox."""
        now = asyncio.get_running_loop().time()
        if self._everything or now - self._looked_everywhere >= self._quiet_s:
            # Also while busy: rows a dead process left in a lane no live one writes to.
            self._everything = False
            self._looked_everywhere = now
            self._lanes.update(await self._topics_with_rows())
        lanes, self._lanes = self._lanes, set()
        moved = 0
        self._full_batch = False
        for topic in sorted(lanes):
            try:
                sent = await self._relay_lane(topic)
            except asyncpg.LockNotAvailableError:  # another relay held the lane too long
                self._lanes.add(topic)
                continue
            except BaseException:
                self._lanes.update(lanes)
                raise
            if sent == self._batch_size:
                self._lanes.add(topic)  # there may be more
                self._full_batch = True
            moved += sent
        return moved

    async def _topics_with_rows(self) -> list[str]:
        # A skip scan of the (topic, id) index: one probe per topic, however long the lanes.
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """WITH RECURSIVE lanes(topic) AS (
                       (SELECT topic FROM runtime_outbox ORDER BY topic LIMIT 1)
                       UNION ALL
                       SELECT (SELECT o.topic FROM runtime_outbox o WHERE o.topic > l.topic
                               ORDER BY o.topic LIMIT 1)
                       FROM lanes l WHERE l.topic IS NOT NULL)
                   SELECT topic FROM lanes WHERE topic IS NOT NULL"""
            )
        return [r["topic"] for r in rows]

    async def _relay_lane(self, topic: str) -> int:
        async with self._pool.acquire() as conn:
            # BEGIN rides with the locks: one round trip fewer on the way to the publish.
            try:
                await conn.execute("BEGIN; " + self._take_lock.format(lane=lane_lock(topic)))
                sent = await self._publish_lane(conn, topic)
            except BaseException:
                with contextlib.suppress(Exception):  # a broken one is discarded by the pool
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            return sent

    async def _publish_lane(self, conn: PoolConnectionProxy, topic: str) -> int:
        rows = await conn.fetch(
            """SELECT id, key, value, header_keys, header_values
               FROM runtime_outbox WHERE topic = $1 ORDER BY id LIMIT $2""",
            topic,
            self._batch_size,
        )
        if not rows:
            return 0
        await self._publisher.publish_raw(
            [
                OutgoingMessage(
                    topic=topic,
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
                await self.relay_once()
                self.healthy = True
                backoff = 0.1
            except (BusUnavailable, OSError, asyncpg.PostgresError) as exc:
                self.healthy = False
                self._everything = True  # the lanes in hand are looked at again
                log.warning("outbox relay failed, retrying", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._lanes:  # a full batch (go on) or a lane another relay held (soon)
                if not self._full_batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self._idle_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._quiet_s)
