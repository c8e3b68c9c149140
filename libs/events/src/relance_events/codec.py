"""Wire format: UTF-8 JSON, one event per message.

Compatibility policy (documented in libs/events/README.md):
- Unknown fields are ignored on read, so producers may add optional fields freely
  without bumping `schema_version`.
- A breaking change bumps the payload's `SCHEMA_VERSION`. A consumer that reads a version
  newer than it knows raises `UnsupportedSchemaVersion`; the consumer loop dead-letters it
  so it can be replayed after the consumer is upgraded. Older versions stay readable.
- An unknown `type` decodes to `Event[UnknownPayload]`; services skip such events (a newer
  producer may be ahead of them), they are not poison.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from relance_events.errors import DecodeError, UnsupportedSchemaVersion
from relance_events.event import Event, event_model
from relance_events.payloads import Payload, UnknownPayload, payload_class

CONTENT_TYPE = "application/vnd.relance.event+json"


def encode(event: Event[Any]) -> bytes:
    # `event.model_dump_json(exclude_none=True).encode()`, without the str round trip.
    return type(event).__pydantic_serializer__.to_json(event, exclude_none=True)


def decode(raw: bytes) -> Event[Payload]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError("an event must be a JSON object")
    type_name = data.get("type")
    if not isinstance(type_name, str):
        raise DecodeError("missing or non-string field 'type'")
    cls = payload_class(type_name)
    version = data.get("schema_version")
    if cls is not UnknownPayload and isinstance(version, int) and version > cls.SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(
            f"{type_name} schema_version {version} is newer than {cls.SCHEMA_VERSION}"
        )
    try:
        event: Event[Payload] = event_model(cls).model_validate(data)
        return event
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DecodeError(f"invalid {type_name}: {where}: {first['msg']}") from None
