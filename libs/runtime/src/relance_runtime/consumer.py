"""The consumer loop every service runs: poll, decode, handle, commit.

- Offsets are committed only after the handler returned, i.e. after its effect is durable,
  and at most every `commit_interval_s` (plus on stop): a commit per batch cost the broker
  and each consumer more than small batches' work. A crash redelivers what was handled but
  not yet committed; every handler is idempotent (inbox, send ledger), so that is only
  work done again.
- Transient failures (bus or database away) are retried with capped exponential backoff,
  forever: the loop never skips an event because a dependency was down.
- A message that cannot be decoded, or whose handling fails permanently (a `PermanentError`,
  or an unexpected error that persists for `max_attempts`), goes to the dead-letter topic with
  its original bytes, the reason and its source offset; the loop then moves on. A failing
  batch is re-run one event at a time so a single poison event does not take others with it.
- On stop (SIGTERM), the in-flight batch may finish within `drain_timeout_s`; otherwise it is
  abandoned (its transaction rolls back, nothing is committed for it). Then the consumer
  commits what is done and leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from relance_events import DecodeError, Event, Payload, UnknownPayload, decode
from relance_runtime.bus.ports import Bus, BusConsumer, OutgoingMessage, Record, TopicPartition
from relance_runtime.errors import PermanentError, RebalancedAway, TransientError
from relance_runtime.telemetry import event_span

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    record: Record
    event: Event[Payload]


class BatchHandler(Protocol):
    async def __call__(self, deliveries: Sequence[Delivery]) -> None: ...


EventHandler = Callable[[Event[Payload]], Awaitable[None]]


def per_event(handler: EventHandler, span_name: str) -> BatchHandler:
    """Adapt a one-event handler; each event runs in its own span, child of its producer's."""

    async def handle(deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            with event_span(span_name, delivery.event):
                await handler(delivery.event)

    return handle


_TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (TransientError, *_TRANSIENT_DB_ERRORS, TimeoutError))


@dataclass
class ConsumerStats:
    processed: int = 0
    skipped_unknown: int = 0
    skipped_unwanted: int = 0
    dead_lettered: int = 0
    retries: int = 0
    rebalanced_commits: int = 0
    last_error: str | None = None
    last_progress_at: datetime | None = None
    lag_hint: dict[str, int] = field(default_factory=dict)


class _Abandoned(Exception):
    """Stop was requested while the batch kept failing transiently."""


class ConsumerLoop:
    def __init__(
        self,
        bus: Bus,
        *,
        group: str,
        topics: Sequence[str],
        handler: BatchHandler,
        dead_letter_topic: str,
        batch_size: int = 500,
        poll_timeout_s: float = 0.5,
        drain_timeout_s: float = 10.0,
        max_attempts: int = 3,
        max_backoff_s: float = 30.0,
        skip_unknown: bool = True,
        event_types: frozenset[str] | None = None,
        commit_interval_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self._bus = bus
        self._topics = list(topics)
        self._handler = handler
        self._dlq = dead_letter_topic
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._max_attempts = max_attempts
        self._max_backoff_s = max_backoff_s
        self._skip_unknown = skip_unknown
        self._wanted = {t.encode() for t in event_types} if event_types is not None else None
        self._sleep = sleep
        self._monotonic = monotonic
        self._commit_interval_s = commit_interval_s
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed_at = monotonic()
        self._consumer: BusConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.stats = ConsumerStats()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.group}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self._drain_timeout_s)
            if not done:
                log.warning("abandoning the in-flight batch", extra={"group": self.group})
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            elif (exc := self._task.exception()) is not None:
                log.error(
                    "consumer loop had crashed", extra={"group": self.group, "error": repr(exc)}
                )
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None
        log.info("consumer stopped", extra={"group": self.group})

    async def _run(self) -> None:
        self._consumer = await self._start_consumer()
        log.info("consumer started", extra={"group": self.group, "topics": self._topics})
        try:
            await self._consume()
        finally:
            # What is done is committed before the group is left (stop, abandon, crash of
            # the loop); bounded, as a bus that is away must not hold the shutdown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._commit_done(), timeout=5)

    async def _consume(self) -> None:
        assert self._consumer is not None
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                records = await self._consumer.poll(
                    max_records=self._batch_size, timeout_s=self._poll_timeout_s
                )
            except TransientError as exc:
                self.stats.last_error = str(exc)
                log.warning("poll failed, retrying", extra={"group": self.group, "error": str(exc)})
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            backoff = 0.1
            if records:
                try:
                    await self._process(records)
                except _Abandoned:
                    return
                for tp, offset in offsets_of(records).items():
                    self._uncommitted[tp] = max(self._uncommitted.get(tp, 0), offset)
            if self._monotonic() - self._committed_at >= self._commit_interval_s:
                await self._commit_done()

    async def _start_consumer(self) -> BusConsumer:
        backoff = 0.2
        while True:
            consumer = self._bus.consumer(self.group, self._topics)
            try:
                await consumer.start()
                return consumer
            except TransientError as exc:
                log.warning("consumer start failed, retrying", extra={"error": str(exc)})
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _process(self, records: Sequence[Record]) -> None:
        deliveries: list[Delivery] = []
        poison: list[tuple[Record, str]] = []
        for record in records:
            if self._wanted is not None and not self._wanted_type(record):
                self.stats.skipped_unwanted += 1
                continue
            try:
                event = decode(record.value)
            except DecodeError as exc:
                poison.append((record, f"undecodable: {exc}"))
                continue
            if self._skip_unknown and isinstance(event.payload, UnknownPayload):
                self.stats.skipped_unknown += 1
                log.info("skipping an unknown event type", extra={"type": event.type})
                continue
            deliveries.append(Delivery(record, event))
        if poison:
            await self._dead_letter(poison)
        if not deliveries:
            return
        failure = await self._attempt(deliveries, attempts=1 if len(deliveries) > 1 else None)
        if failure is None:
            self._progress(len(deliveries))
            return
        if len(deliveries) > 1:
            log.warning(
                "batch failed; retrying one event at a time",
                extra={"group": self.group, "error": failure},
            )
            for delivery in deliveries:
                single = await self._attempt([delivery], attempts=None)
                if single is None:
                    self._progress(1)
                else:
                    await self._dead_letter([(delivery.record, single)])
        else:
            await self._dead_letter([(deliveries[0].record, failure)])

    def _wanted_type(self, record: Record) -> bool:
        """By the `event-type` header, before decoding; a record without one is decoded
        (and its handler decides), so nothing is skipped on a guess."""
        assert self._wanted is not None
        for name, value in record.headers:
            if name == "event-type":
                return value in self._wanted
        return True

    async def _attempt(self, deliveries: Sequence[Delivery], attempts: int | None) -> str | None:
        """Run the handler; transient errors retry forever, others up to the limit.

        Returns None on success, else the reason of the permanent failure.
        """
        limit = attempts if attempts is not None else self._max_attempts
        tries = 0
        backoff = 0.1
        while True:
            try:
                await self._handler(deliveries)
                return None
            except Exception as exc:
                self.stats.last_error = repr(exc)
                if is_transient(exc):
                    if self._stopping.is_set():
                        raise _Abandoned from exc
                    self.stats.retries += 1
                    log.warning(
                        "transient failure, backing off",
                        extra={"group": self.group, "error": repr(exc), "backoff_s": backoff},
                    )
                    await self._sleep(backoff * (0.5 + random.random() / 2))
                    backoff = min(backoff * 2, self._max_backoff_s)
                    continue
                tries += 1
                if isinstance(exc, PermanentError) or tries >= limit:
                    if not isinstance(exc, PermanentError) and len(deliveries) == 1:
                        log.exception("handler failed", extra={"group": self.group})
                    return f"{type(exc).__name__}: {exc}"
                self.stats.retries += 1
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _dead_letter(self, items: Sequence[tuple[Record, str]]) -> None:
        now = datetime.now(UTC).isoformat()
        messages = [
            OutgoingMessage(
                topic=self._dlq,
                key=record.key,
                value=record.value,
                headers=(
                    *record.headers,
                    ("dlq-reason", reason[:2000].encode()),
                    ("dlq-source-topic", record.topic.encode()),
                    ("dlq-source-partition", str(record.partition).encode()),
                    ("dlq-source-offset", str(record.offset).encode()),
                    ("dlq-consumer-group", self.group.encode()),
                    ("dlq-at", now.encode()),
                ),
            )
            for record, reason in items
        ]
        backoff = 0.1
        while True:
            try:
                await self._bus.publish_raw(messages)
                break
            except TransientError as exc:
                if self._stopping.is_set():
                    raise _Abandoned from exc
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
        self.stats.dead_lettered += len(items)
        for record, reason in items:
            log.error(
                "message dead-lettered",
                extra={
                    "group": self.group,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": reason,
                },
            )

    async def _commit_done(self) -> None:
        """Commit the offsets of every batch handled since the last commit.

        Only partitions this member still owns are sent: a commit naming one that moved
        away is refused whole, and the offsets of the partitions it kept, handled but never
        committed again, would leave their lag stuck until new records arrive. A moved
        partition's new owner redelivers from its last commit; inboxes dedupe."""
        self._committed_at = self._monotonic()
        if not self._uncommitted or self._consumer is None:
            return
        owned = self._consumer.assignment()
        offsets = {tp: o for tp, o in self._uncommitted.items() if tp in owned}
        self._uncommitted = {}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except RebalancedAway as exc:
            # The group moved partitions between our look and the commit: what is still
            # ours goes with the next commit.
            self.stats.rebalanced_commits += 1
            self._requeue(offsets, self._consumer.assignment())
            log.warning(
                "commit after rebalance ignored", extra={"group": self.group, "error": str(exc)}
            )
        except TransientError as exc:
            self._requeue(offsets, None)  # tried again with the next commit
            log.warning("commit failed; will retry", extra={"error": str(exc)})

    def _requeue(
        self, offsets: Mapping[TopicPartition, int], owned: frozenset[TopicPartition] | None
    ) -> None:
        for tp, offset in offsets.items():
            if owned is None or tp in owned:
                self._uncommitted[tp] = max(self._uncommitted.get(tp, 0), offset)

    def _progress(self, n: int) -> None:
        self.stats.processed += n
        self.stats.last_progress_at = datetime.now(UTC)


def offsets_of(records: Sequence[Record]) -> Mapping[TopicPartition, int]:
    """The `{partition: last offset + 1}` map to commit once `records` are done."""
    last: dict[tuple[str, int], int] = {}
    for r in records:  # every record of every poll: plain tuples, one object per partition
        key = (r.topic, r.partition)
        if r.offset >= last.get(key, -1):
            last[key] = r.offset
    return {TopicPartition(topic, partition): o + 1 for (topic, partition), o in last.items()}


__all__ = [
    "BatchHandler",
    "ConsumerLoop",
    "ConsumerStats",
    "Delivery",
    "EventHandler",
    "is_transient",
    "offsets_of",
    "per_event",
]
