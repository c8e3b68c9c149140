"""The Relance event contract: envelope, typed payloads, wire codec and topic registry."""

from relance_events.codec import CONTENT_TYPE, decode, encode
from relance_events.envelope import Envelope, TraceContext, deterministic_id
from relance_events.errors import DecodeError, EventError, UnsupportedSchemaVersion
from relance_events.event import Event, new_event
from relance_events.payloads import PAYLOAD_TYPES, Payload, UnknownPayload
from relance_events.topics import ALL_TOPICS, Topic, topic_for
from relance_events.wire import EncodedEvent, Publishable, as_event

__all__ = [
    "ALL_TOPICS",
    "CONTENT_TYPE",
    "PAYLOAD_TYPES",
    "DecodeError",
    "EncodedEvent",
    "Envelope",
    "Event",
    "EventError",
    "Payload",
    "Publishable",
    "Topic",
    "TraceContext",
    "UnknownPayload",
    "UnsupportedSchemaVersion",
    "as_event",
    "decode",
    "deterministic_id",
    "encode",
    "new_event",
    "topic_for",
]
