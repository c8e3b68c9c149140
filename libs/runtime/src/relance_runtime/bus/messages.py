"""Event <-> bus message mapping, shared by every bus adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2

from relance_events import CONTENT_TYPE, Event, encode, topic_for
from relance_events.topics import ALL_TOPICS, Topic
from relance_runtime.bus.ports import OutgoingMessage


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Physical names: a prefix isolates tests, or several Relance installs on one cluster."""

    prefix: str = ""

    def of(self, topic: Topic) -> str:
        return f"{self.prefix}{topic.name}"

    def group(self, group: str) -> str:
        return f"{self.prefix}{group}"

    def logical(self, physical: str) -> Topic:
        for topic in ALL_TOPICS:
            if self.of(topic) == physical:
                return topic
        raise KeyError(physical)

    def all(self) -> list[tuple[str, Topic]]:
        return [(self.of(t), t) for t in ALL_TOPICS]


def partition_for(key: bytes | None, partitions: int, fallback: int = 0) -> int:
    """Kafka's default partitioner (murmur2), so every bus places a key alike."""
    if key is None:
        return fallback % partitions
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def to_message(event: Event[Any], names: TopicNames) -> OutgoingMessage:
    headers: list[tuple[str, bytes]] = [
        ("content-type", CONTENT_TYPE.encode()),
        ("event-type", event.type.encode()),
        ("event-id", str(event.event_id).encode()),
    ]
    if event.trace is not None:
        headers.append(("traceparent", event.trace.traceparent.encode()))
        if event.trace.tracestate:
            headers.append(("tracestate", event.trace.tracestate.encode()))
    return OutgoingMessage(
        topic=names.of(topic_for(event.type)),
        key=event.partition_key,
        value=encode(event),
        headers=tuple(headers),
    )
