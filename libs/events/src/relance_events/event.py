"""An event: the envelope plus its typed payload."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, TypeVar

from relance_events.envelope import Envelope, TraceContext
from relance_events.payloads import Payload

P = TypeVar("P", bound=Payload)


class Event(Envelope, Generic[P]):
    payload: P


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
    model: Any = Event[type(payload)]  # type: ignore[misc]
    event: Event[P] = model(
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
