"""Which topics each service reads, under which consumer group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from relance_events import topics
from relance_events.payloads import ConsentChanged, ContactIdentified, OrderCompleted

ServiceName = Literal["ingest", "segmentation", "orchestrator", "sender", "feedback"]
SERVICE_NAMES: Final[tuple[ServiceName, ...]] = (
    "ingest",
    "segmentation",
    "orchestrator",
    "sender",
    "feedback",
)


@dataclass(frozen=True, slots=True)
class Subscription:
    group: str
    topics: tuple[topics.Topic, ...]
    # Only these event types reach the handler; the others are skipped by their
    # `event-type` header, undecoded (their offsets are committed all the same). None: all.
    event_types: frozenset[str] | None = None


SUBSCRIPTIONS: Final[dict[ServiceName, tuple[Subscription, ...]]] = {
    "ingest": (),
    "segmentation": (Subscription("segmentation", (topics.EVENTS,)),),
    "orchestrator": (
        Subscription(
            "orchestrator",
            (topics.EVENTS, topics.SEGMENTS, topics.MESSAGE_STATUS),
        ),
    ),
    # Consent changes get their own group: an objection must not wait behind a backlog of
    # message requests before the sender knows about it.
    "sender": (
        Subscription("sender", (topics.MESSAGE_REQUESTS,)),
        Subscription("sender-consent", (topics.EVENTS,), frozenset({ConsentChanged.TYPE})),
    ),
    # Contact details and orders, for support alerts.
    "feedback": (
        Subscription(
            "feedback", (topics.EVENTS,), frozenset({ContactIdentified.TYPE, OrderCompleted.TYPE})
        ),
    ),
}
