"""The versioned envelope every event travels in."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated, NewType

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

EventId = NewType("EventId", uuid.UUID)
ShopId = NewType("ShopId", str)
ContactKey = NewType("ContactKey", str)

# Namespace for deterministic event ids (uuid5): the same input always maps to the same id,
# which is what makes a retried ingest or a replayed handler idempotent downstream.
RELANCE_NAMESPACE = uuid.UUID("6f0d3c1e-5b7a-4c57-9a51-2f3e1c9d8b40")


_NAMESPACE_BYTES = RELANCE_NAMESPACE.bytes
# RFC 4122 version 5 and variant bits, as uuid.UUID(version=5) sets them.
_CLEAR_VERSION = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET_VERSION = (5 << 76) | (0x8000 << 48)


def deterministic_id(*parts: str) -> uuid.UUID:
    """A stable UUID for a tuple of strings (joined with a separator no part may contain).

    It is `uuid.uuid5(RELANCE_NAMESPACE, name)`, computed without uuid5's own overhead
    (ingest derives one per event it accepts).
    """
    digest = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()
    return uuid.UUID(int=(int.from_bytes(digest[:16]) & _CLEAR_VERSION) | _SET_VERSION)


# The hex digit of the variant nibble (RFC 4122: 10xx), by the digest's hex digit there.
_VARIANT_DIGIT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def deterministic_id_str(*parts: str) -> str:
    """`str(deterministic_id(*parts))`, straight from the digest (a producer that writes
    the id into JSON and a header never needs the `UUID` object)."""
    h = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_require_utc)]


class TraceContext(BaseModel):
    """W3C trace context, so one trace spans ingest -> ... -> sender."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    traceparent: str = Field(max_length=128)
    tracestate: str | None = Field(default=None, max_length=512)


class Envelope(BaseModel):
    """Metadata common to every event; the payload model says what happened.

    `event_id` is the idempotency key: consumers record it in an inbox table in the same
    transaction as the effect, so redelivery never applies an event twice.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: uuid.UUID
    type: str = Field(min_length=1, max_length=64)
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    shop_id: str = Field(min_length=1, max_length=64)
    contact_key: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=64)
    trace: TraceContext | None = None

    @property
    def partition_key(self) -> bytes:
        """Kafka key: one contact of one shop always lands on the same partition."""
        return f"{self.shop_id}\x1f{self.contact_key}".encode()
