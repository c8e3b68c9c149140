"""The bus port: what services need from Kafka or from the PostgreSQL log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from relance_events import Publishable


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One message as read from the bus; `value` is the original bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default=())


class Publisher(Protocol):
    async def publish(self, events: Sequence[Publishable]) -> None:
        """Return only when the bus has durably taken every event (Kafka: acks=all).

        Events are models, or already in their wire form (`EncodedEvent`, from ingest).

        Raises `BusUnavailable` when it could not; the caller must then treat every event
        of the call as not accepted (some may have been written: consumers dedupe by id).
        """
        ...

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        """Same contract, for bytes that are already encoded (dead letters, relays)."""
        ...


class BusConsumer(Protocol):
    """One member of a consumer group. Offsets are committed only when asked."""

    async def start(self) -> None: ...

    async def poll(self, *, max_records: int, timeout_s: float) -> list[Record]: ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit `next offset to read` per partition; raises `RebalancedAway` if one is not
        owned. Where a rebalance restarts owned partitions at their committed offset
        (Kafka), offsets of records polled before it are left out: those records come
        again."""
        ...

    async def stop(self) -> None:
        """Leave the group (without committing anything new)."""
        ...

    def assignment(self) -> frozenset[TopicPartition]: ...


class Bus(Publisher, Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_topics(self) -> None: ...

    def consumer(self, group: str, topics: Sequence[str]) -> BusConsumer: ...

    async def ping(self) -> bool:
        """Whether publishes can currently succeed (for readiness)."""
        ...
