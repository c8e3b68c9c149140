"""The Kafka adapter, on aiokafka.

Producer: `acks="all"` and idempotence on (aiokafka's defaults are acks=1, no idempotence).
Publishing never retries at the application level (that would duplicate): the producer's
own retries are idempotent, and a failure surfaces as `BusUnavailable`.

Consumers: auto-commit off; offsets are committed explicitly as `{tp: last + 1}` once the
handler's effect is durable. A commit naming a partition no longer assigned raises
`RebalancedAway`. A rebalance restarts every partition at its committed offset, even one
that stays with this member: offsets of records polled before it are not committed (they
come again, and inboxes dedupe), so a commit can never move a partition back behind what
another member committed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)

from relance_events import Publishable
from relance_runtime.bus.messages import TopicNames, message_parts, partition_for
from relance_runtime.bus.ports import BusConsumer, OutgoingMessage, Record, TopicPartition
from relance_runtime.errors import BusUnavailable, RebalancedAway, TransientError

log = logging.getLogger(__name__)

# (topic, key, value, headers): an event's `message_parts`, or an `OutgoingMessage`'s.
RawParts = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


def record_of(message: Any) -> Record:
    """A bus `Record` from an aiokafka `ConsumerRecord`."""
    headers = message.headers
    if not headers:
        headers = ()
    elif type(headers[0][1]) is bytes:  # what aiokafka's record parser gives: no copy
        headers = tuple(headers)
    else:
        headers = tuple((k, bytes(v)) for k, v in headers)
    value = message.value
    # Positional: every consumer group reads every record of its topics, skipped or not.
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        value if value is not None else b"",
        headers,
        message.timestamp,
    )


class KafkaBus:
    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "relance",
        names: TopicNames | None = None,
        linger_ms: int = 2,
        request_timeout_ms: int = 15_000,
        delivery_timeout_s: float = 30.0,
        session_timeout_ms: int = 10_000,
        metadata_backoff_s: float = 0.1,
    ) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self.names = names or TopicNames()
        self._linger_ms = linger_ms
        self._request_timeout_ms = request_timeout_ms
        self._delivery_timeout_s = delivery_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._failures_in_a_row = 0
        self._session_timeout_ms = session_timeout_ms
        self._metadata_backoff_s = metadata_backoff_s
        # Per partition count: {key: partition}.
        self._partition_cache: dict[int, dict[bytes, int]] = {}

    async def start(self) -> None:
        await self._start_producer()

    async def _start_producer(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=self._request_timeout_ms,
        )
        throttle_metadata_updates(producer.client, self._metadata_backoff_s)
        try:
            await producer.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise BusUnavailable(f"Kafka at {self._bootstrap} is unreachable: {exc}") from exc
        self._producer = producer

    async def stop(self) -> None:
        """Stop the producer, waiting at most `delivery_timeout_s` for unsent batches.

        aiokafka's stop waits until every pending batch is delivered, which never happens
        while the broker is down; their publishes have failed (or will) with
        `BusUnavailable`, so nothing acknowledged is dropped by giving up on them.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.stop(), timeout=self._delivery_timeout_s)
        except TimeoutError:
            log.warning("the Kafka producer did not flush in time; unsent batches dropped")

    async def ensure_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id)
        try:
            await admin.start()
        except KafkaError as exc:
            raise BusUnavailable(f"Kafka at {self._bootstrap} is unreachable: {exc}") from exc
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(
                    name=name,
                    num_partitions=topic.partitions,
                    replication_factor=1,
                    topic_configs={"retention.ms": str(topic.retention_ms)},
                )
                for name, topic in self.names.all()
                if name not in existing
            ]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(wanted)
                log.info("topics created", extra={"topics": [t.name for t in wanted]})
            await self._wait_for_leaders(admin, [name for name, _ in self.names.all()])
        finally:
            await admin.close()

    async def _wait_for_leaders(self, admin: AIOKafkaAdminClient, topics: list[str]) -> None:
        """New partitions take a moment to elect a leader; publishing before that retries."""
        for _ in range(100):
            described = await admin.describe_topics(topics)
            if all(
                t.get("error_code", 0) == 0
                and t.get("partitions")
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.1)
        raise BusUnavailable(f"partitions of {topics} have no leader after 10 s")

    async def publish(self, events: Sequence[Publishable]) -> None:
        await self._publish([message_parts(event, self.names) for event in events])

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        await self._publish([(m.topic, m.key, m.value, list(m.headers)) for m in messages])

    async def _publish(self, messages: Sequence[RawParts]) -> None:
        if not messages:
            return
        producer = await self._live_producer()
        try:
            futures = await self._send_batches(producer, messages)
            async with asyncio.timeout(self._delivery_timeout_s):
                for future in futures:
                    await future
        except (KafkaError, TimeoutError) as exc:
            self._failures_in_a_row += 1
            raise BusUnavailable(f"Kafka did not acknowledge the batch: {exc!r}") from exc
        self._failures_in_a_row = 0

    async def _send_batches(
        self, producer: AIOKafkaProducer, messages: Sequence[RawParts]
    ) -> list[asyncio.Future[Any]]:
        """One record batch per partition instead of one future per message.

        Partitions are chosen with Kafka's default partitioner, so a key lands where it
        would with `send()`; order within a partition is the order of `messages`.
        """
        by_partition: dict[tuple[str, int], list[RawParts]] = {}
        counts: dict[str, int] = {}
        partition_of = self._partition
        for i, m in enumerate(messages):
            topic = m[0]
            count = counts.get(topic)
            if count is None:
                count = counts[topic] = len(await producer.partitions_for(topic))
            where = (topic, partition_of(m[1], count, i))
            batch_messages = by_partition.get(where)
            if batch_messages is None:
                by_partition[where] = [m]
            else:
                batch_messages.append(m)
        futures: list[asyncio.Future[Any]] = []
        for (topic, partition), batch_messages in by_partition.items():
            batch = producer.create_batch()
            for _, key, value, headers in batch_messages:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    batch.close()
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise BusUnavailable("a message is larger than the producer's batch size")
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    def _partition(self, key: bytes | None, partitions: int, fallback: int) -> int:
        # murmur2 is pure Python (~4.5 us); contact keys repeat, so remember them.
        if key is None:
            return fallback % partitions
        cache = self._partition_cache.get(partitions)
        if cache is None:
            cache = self._partition_cache[partitions] = {}
        cached = cache.get(key)
        if cached is None:
            if len(cache) > 100_000:
                cache.clear()
            cached = cache[key] = partition_for(key, partitions)
        return cached

    async def _live_producer(self) -> AIOKafkaProducer:
        # aiokafka #1017: an idempotent producer can wedge after a broker outage
        # (OutOfOrderSequenceNumber); after repeated failures, start a fresh one.
        if self._producer is not None and self._failures_in_a_row >= 3:
            log.warning("re-creating the Kafka producer after repeated failures")
            await self._replace_producer()
        if self._producer is None:
            await self._start_producer()
        assert self._producer is not None
        return self._producer

    async def _replace_producer(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), timeout=5)
        self._failures_in_a_row = 0
        await self._start_producer()

    async def ping(self) -> bool:
        """Whether publishing works: the broker answers a producer that can be trusted.

        After a failed publish (or start) the producer is replaced first (a fresh one
        cannot be wedged by what failed, aiokafka #1017), so readiness comes back with the
        broker even in a process that has nothing to publish."""
        try:
            if self._producer is None or self._failures_in_a_row > 0:
                await asyncio.wait_for(self._replace_producer(), timeout=5)
            assert self._producer is not None
            client = self._producer.client
            return bool(await asyncio.wait_for(client.fetch_all_metadata(), timeout=3))
        except (KafkaError, TimeoutError, BusUnavailable):
            return False

    def consumer(self, group: str, topics: Sequence[str]) -> BusConsumer:
        return KafkaConsumer(
            self._bootstrap,
            group=self.names.group(group),
            topics=list(topics),
            client_id=self._client_id,
            session_timeout_ms=self._session_timeout_ms,
        )


def throttle_metadata_updates(client: Any, backoff_s: float) -> None:
    """After a failed metadata update, start the next one only `backoff_s` later.

    aiokafka asks for a metadata update whenever a connection fails, and its producer
    sender asks again as soon as an update ends while a partition's leader is unknown;
    with the broker down a refused connection fails each update at once, so an idle
    ingest spun a whole core (about 8,000 updates a second) for as long as the broker was
    away, starving the machine it shares with the broker's restart.
    """
    update = client.force_metadata_update
    retry_at = 0.0

    def force_metadata_update() -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()

        async def after_backoff() -> bool:
            nonlocal retry_at
            wait = retry_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            updated = bool(await update())
            if not updated:
                retry_at = loop.time() + backoff_s
            return updated

        return asyncio.ensure_future(after_backoff())

    client.force_metadata_update = force_metadata_update


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info(
            "partitions revoked",
            extra={"group": self._owner.group, "partitions": sorted(map(str, revoked))},
        )
        self._owner.generation += 1

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info(
            "partitions assigned",
            extra={"group": self._owner.group, "partitions": sorted(map(str, assigned))},
        )


class KafkaConsumer:
    def __init__(
        self,
        bootstrap: str,
        *,
        group: str,
        topics: list[str],
        client_id: str,
        session_timeout_ms: int = 10_000,
    ) -> None:
        self.group = group
        # Counts revocations; `_polled_in` says in which one a partition was last polled.
        self.generation = 0
        self._polled_in: dict[TopicPartition, int] = {}
        self._stopped = False
        self._topics = topics
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_uncommitted",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=min(1_000, session_timeout_ms // 3),
            max_poll_interval_ms=300_000,
            # Long polling: the broker answers a fetch as soon as a record arrives, so a
            # longer wait adds no latency, only fewer empty fetches from an idle consumer.
            fetch_max_wait_ms=500,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def start(self) -> None:
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        try:
            await self._consumer.start()
        except KafkaError as exc:
            raise TransientError(f"Kafka consumer could not start: {exc}") from exc

    async def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=max_records
            )
        except KafkaConnectionError as exc:
            raise TransientError(f"Kafka fetch failed: {exc}") from exc
        generation = self.generation
        polled_in = self._polled_in
        for tp in batches:
            polled_in[TopicPartition(tp.topic, tp.partition)] = generation
        return [record_of(m) for messages in batches.values() for m in messages]

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        current: dict[KafkaTopicPartition, int] = {}
        for tp, offset in offsets.items():
            kafka_tp = KafkaTopicPartition(tp.topic, tp.partition)
            if kafka_tp not in assigned:
                raise RebalancedAway(f"commit refused, partition {tp} is not assigned")
            if self._polled_in.get(tp) == self.generation:
                current[kafka_tp] = offset
        if not current:
            return
        try:
            await self._consumer.commit(current)
        except (CommitFailedError, IllegalStateError) as exc:
            raise RebalancedAway(f"commit refused, partitions moved: {exc}") from exc
        except KafkaError as exc:
            raise TransientError(f"commit failed: {exc}") from exc

    async def stop(self) -> None:
        self._stopped = True
        await self._consumer.stop()

    def assignment(self) -> frozenset[TopicPartition]:
        if self._stopped:
            return frozenset()
        return frozenset(
            TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()
        )
