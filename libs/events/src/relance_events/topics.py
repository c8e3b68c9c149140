"""The topic registry. Every topic is keyed by `Envelope.partition_key` (shop + contact),
so one contact's events stay in order within a topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    description: str
    retention_ms: int = 7 * 24 * 3600 * 1000


EVENTS: Final = Topic(
    "relance.events.v1",
    12,
    "What shops and people do: identify, alias, consent, orders, carts, opens, clicks, "
    "survey answers. Written by ingest and feedback.",
)
SEGMENTS: Final = Topic(
    "relance.segments.v1",
    12,
    "Changes of lifecycle stage, loyalty tier and RFM segment, and trait changes. "
    "Written by segmentation.",
)
MESSAGE_REQUESTS: Final = Topic(
    "relance.messages.requested.v1",
    12,
    "Messages the orchestrator wants sent. Written by the orchestrator, read by the sender.",
)
MESSAGE_STATUS: Final = Topic(
    "relance.messages.status.v1",
    12,
    "sent / delivered / failed / bounced. Written by the sender.",
)
DEAD_LETTERS: Final = Topic(
    "relance.dlq.v1",
    3,
    "Poison messages: original bytes, the reason, and where they came from.",
    retention_ms=30 * 24 * 3600 * 1000,
)

ALL_TOPICS: Final[tuple[Topic, ...]] = (
    EVENTS,
    SEGMENTS,
    MESSAGE_REQUESTS,
    MESSAGE_STATUS,
    DEAD_LETTERS,
)

# A message type goes to exactly one topic.
_TOPIC_BY_TYPE_PREFIX: Final = (
    ("segment.", SEGMENTS),
    ("contact.traits_changed", SEGMENTS),
    ("message.requested", MESSAGE_REQUESTS),
    ("message.", MESSAGE_STATUS),
)


def topic_for(event_type: str) -> Topic:
    for prefix, topic in _TOPIC_BY_TYPE_PREFIX:
        if event_type.startswith(prefix):
            return topic
    return EVENTS


def by_name(name: str) -> Topic:
    for topic in ALL_TOPICS:
        if topic.name == name:
            return topic
    raise KeyError(name)
