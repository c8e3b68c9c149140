"""What `decide` returns for the service layer to carry out, and the wake-up input."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from relance_events.payloads import Channel, Purpose
from relance_orchestrator.domain.state import FinishReason


@dataclass(frozen=True, slots=True)
class Wakeup:
    """A durable timer fired: an input to `decide` like any event."""

    key: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RequestMessage:
    message_id: str
    shop_id: str
    contact_key: str
    plan: str
    step: str
    plan_instance: str
    variant: str | None
    channel: Channel
    purpose: Purpose
    locale: str | None
    at: datetime
    not_after: datetime | None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScheduleWakeup:
    """Create or move the one timer with this key."""

    key: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CancelWakeups:
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Finish:
    plan: str
    plan_instance: str
    instance_key: str
    reason: FinishReason
    at: datetime


DecisionKind = Literal["held", "dropped", "skipped"]
DecisionReason = Literal[
    "condition", "quiet_hours", "frequency_cap", "no_basis", "objection", "window_closed"
]


@dataclass(frozen=True, slots=True)
class DecisionRecorded:
    """A step that did not send when due, and why; never silent."""

    plan: str
    step: str
    plan_instance: str
    decision: DecisionKind
    reason: DecisionReason
    at: datetime
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderAttributed:
    """A purchase inside the attribution window after the contact's last message."""

    order_id: str
    plan: str
    step: str
    message_id: str
    revenue: Decimal
    at: datetime


Command = (
    RequestMessage | ScheduleWakeup | CancelWakeups | Finish | DecisionRecorded | OrderAttributed
)
