"""Event <-> bus message mapping, shared by every bus adapter."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from aiokafka.partitioner import murmur2

from relance_events import CONTENT_TYPE, EncodedEvent, Publishable, encode, topic_for
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


_CONTENT_TYPE_HEADER = ("content-type", CONTENT_TYPE.encode())

# (topic, key, value, headers) of one event: what a bus adapter writes.
MessageParts = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


@lru_cache(maxsize=1024)
def _physical_topic(prefix: str, event_type: str) -> str:
    return TopicNames(prefix).of(topic_for(event_type))


def message_parts(event: Publishable, names: TopicNames) -> MessageParts:
    """What `to_message` holds, without building it (Kafka appends these straight away).

    An `EncodedEvent` is already its bytes; a built event is encoded here."""
    headers = [
        _CONTENT_TYPE_HEADER,
        ("event-type", event.type.encode()),
        ("event-id", str(event.event_id).encode()),
    ]
    trace = event.trace
    if trace is not None:
        headers.append(("traceparent", trace.traceparent.encode()))
        if trace.tracestate:
            headers.append(("tracestate", trace.tracestate.encode()))
    return (
        _physical_topic(names.prefix, event.type),
        f"{event.shop_id}\x1f{event.contact_key}".encode(),  # event.partition_key
        event.value if isinstance(event, EncodedEvent) else encode(event),
        headers,
    )


def to_message(event: Publishable, names: TopicNames) -> OutgoingMessage:
    topic, key, value, headers = message_parts(event, names)
    return OutgoingMessage(topic=topic, key=key, value=value, headers=tuple(headers))
