"""An event: the envelope plus its typed payload."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cache
from typing import Any, Generic, TypeVar

from relance_events.envelope import Envelope, TraceContext
from relance_events.payloads import Payload, checked_model

P = TypeVar("P", bound=Payload)


class Event(Envelope, Generic[P]):
    payload: P


@cache
def event_model(payload_type: type[Payload]) -> Any:
    """`Event[payload_type]`, one class per payload class for good.

    Parametrising a generic model is costly, and pydantic keeps parametrised classes only
    weakly: one nobody holds is collected and built again, at about a millisecond a time.
    Producers and `decode` call this per event."""
    return Event[payload_type]  # type: ignore[valid-type]


def new_event(
    payload: P,
    *,
    shop_id: str,
    contact_key: str,
    source: str,
    occurred_at: datetime,
    received_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    trace: TraceContext | None = None,
) -> Event[P]:
    """Build an event, taking its type and schema version from the payload class."""
    event: Event[P] = event_model(type(payload))(
        event_id=event_id or uuid.uuid4(),
        type=payload.TYPE,
        schema_version=payload.SCHEMA_VERSION,
        occurred_at=occurred_at,
        received_at=received_at or occurred_at,
        shop_id=shop_id,
        contact_key=contact_key,
        source=source,
        trace=trace,
        payload=payload,
    )
    return event


def checked_event(
    payload: P,
    *,
    event_id: uuid.UUID,
    shop_id: str,
    contact_key: str,
    source: str,
    occurred_at: datetime,
    received_at: datetime,
    trace: TraceContext | None,
) -> Event[P]:
    """`new_event` for a caller that has checked every envelope field itself.

    The Segment mapper validates each message field by field, and its payloads are
    validated models; pydantic checking the envelope again cost a few microseconds per
    event. The result equals what `new_event` returns for the same arguments (a test
    compares them); arguments `new_event` would refuse must not reach here.
    """
    event: Event[P] = checked_model(
        event_model(type(payload)),
        {
            "event_id": event_id,
            "type": payload.TYPE,
            "schema_version": payload.SCHEMA_VERSION,
            "occurred_at": occurred_at,
            "received_at": received_at,
            "shop_id": shop_id,
            "contact_key": contact_key,
            "source": source,
            "trace": trace,
            "payload": payload,
        },
    )
    return event
