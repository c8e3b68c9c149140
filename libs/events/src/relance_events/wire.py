"""Events in their wire form, built without the `Event` model: a producer's fast path.

Ingest checks a Segment message field by field and then only needs the bytes `encode`
would give. Building the pydantic `Event` (and its payload, its id) and serializing it
cost about half of ingest's CPU per event; an `EncodedEvent` is those bytes and what a
bus needs to route them. Its `value` is exactly `encode(event)` for the event the model
path builds from the same message (a property test maps messages both ways), and
`.event()` gives that event back for the rare caller that needs the model.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeAlias

import orjson
from pydantic import BaseModel

from relance_events.codec import decode, encode
from relance_events.envelope import TraceContext
from relance_events.event import Event
from relance_events.payloads import OrderCompleted, Payload


class EncodedEvent(NamedTuple):
    """An event as bytes, with the envelope fields a bus routes by.

    `cart_id` is the cart an order closes (None for any other event): cart probes need it
    without decoding the value. (A named tuple: ingest makes one per event, and a frozen
    dataclass costs three times as much to build.)
    """

    event_id: str
    type: str
    shop_id: str
    contact_key: str
    trace: TraceContext | None
    value: bytes
    cart_id: str | None = None

    @property
    def partition_key(self) -> bytes:
        """As `Envelope.partition_key`: shop and contact."""
        return f"{self.shop_id}\x1f{self.contact_key}".encode()

    def event(self) -> Event[Any]:
        """The event these bytes encode (equal to the model the slow path builds)."""
        return decode(self.value)

    @classmethod
    def of(cls, event: Event[Any]) -> EncodedEvent:
        """The wire form of a built event."""
        payload = event.payload
        return cls(
            event_id=str(event.event_id),
            type=event.type,
            shop_id=event.shop_id,
            contact_key=event.contact_key,
            trace=event.trace,
            value=encode(event),
            cart_id=payload.cart_id if isinstance(payload, OrderCompleted) else None,
        )


# What a publisher takes: built events, or events already in their wire form.
Publishable: TypeAlias = Event[Any] | EncodedEvent


def as_event(item: Publishable) -> Event[Any]:
    """The model of either form."""
    return item.event() if isinstance(item, EncodedEvent) else item


def payload_json(payload: Payload) -> orjson.Fragment:
    """A payload model's JSON as the event's serializer writes it (no `None` fields)."""
    return orjson.Fragment(
        type(payload).__pydantic_serializer__.to_json(payload, exclude_none=True)
    )


def fields_json(fields: dict[str, Any]) -> dict[str, Any]:
    """A payload's field values, for a payload valid by construction, ready for
    `encode_envelope`: what its model would serialize, without building the model.

    `fields` names every field in declaration order (as `checked_model` wants). Only flat
    values are handled here: strings, numbers, `Decimal`s and lists of models; a `None`
    field is left out, as `exclude_none` does.
    """
    return {
        name: str(value) if type(value) is Decimal else value
        for name, value in fields.items()
        if value is not None
    }


def _json_default(value: Any) -> Any:
    # orjson calls this for the types it does not serialize itself; the answers are
    # pydantic's JSON for them (`Decimal` as its string, a model without `None` fields).
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return type(value).__pydantic_serializer__.to_python(value, mode="json", exclude_none=True)
    raise TypeError(f"{type(value).__name__} is not part of an event")


def encode_envelope(
    *,
    event_id: str,
    type_name: str,
    schema_version: int,
    occurred_at: datetime,
    received_at: datetime,
    shop_id: str,
    contact_key: str,
    source: str,
    trace: TraceContext | None,
    payload: orjson.Fragment | dict[str, Any],
) -> bytes:
    """The bytes `encode` gives for an event with these envelope fields and this payload
    (`payload_json` or `fields_json`). The caller has checked every field as the
    envelope's validation would (see `checked_event`). Raises `orjson.JSONEncodeError`
    for text JSON cannot carry (lone surrogates), as `encode` would fail on it."""
    envelope: dict[str, Any] = {
        "event_id": event_id,
        "type": type_name,
        "schema_version": schema_version,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "shop_id": shop_id,
        "contact_key": contact_key,
        "source": source,
    }
    if trace is not None:
        envelope["trace"] = (
            {"traceparent": trace.traceparent}
            if trace.tracestate is None
            else {"traceparent": trace.traceparent, "tracestate": trace.tracestate}
        )
    envelope["payload"] = payload
    # OPT_UTC_Z: a UTC time ends in "Z", as pydantic writes it; other offsets match as is.
    return orjson.dumps(envelope, default=_json_default, option=orjson.OPT_UTC_Z)
