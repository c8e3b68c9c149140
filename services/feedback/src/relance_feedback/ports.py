"""What the feedback use cases need from the outside: storage, transactions, the platform's
outbox and inbox, and alert delivery I/O."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from relance_events import Event
from relance_feedback.domain.alerts import ContactCard, OrderCard
from relance_feedback.domain.answers import Answer
from relance_feedback.domain.delivery import AttemptOutcome
from relance_feedback.domain.leave_reasons import LeaveReasonRecord, ReasonCount
from relance_feedback.domain.stats import AnswerCounts

AlertState = Literal["pending", "sent", "failed"]


class Connection(Protocol):
    """The part of an asyncpg connection (or pool proxy) the repository uses."""

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


class Transactor(Protocol):
    """Opens a connection inside a transaction; commits on exit, rolls back on error."""

    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...


@dataclass(frozen=True, slots=True)
class NewAlert:
    alert_id: uuid.UUID
    shop_id: str
    answer_id: uuid.UUID
    order_id: str
    contact_key: str
    webhook_id: str
    url: str
    body: bytes
    created_at: datetime
    state: AlertState
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DueAlert:
    """An alert claimed for one attempt; `endpoint_disabled` when a 410 switched it off."""

    alert_id: uuid.UUID
    shop_id: str
    webhook_id: str
    url: str
    body: bytes
    attempts: int
    endpoint_disabled: bool


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt and the state it leaves the alert in."""

    alert_id: uuid.UUID
    shop_id: str
    attempt: int
    started_at: datetime
    duration_ms: int
    status: int | None
    error: str | None
    state: AlertState
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class AlertCounts:
    pending: int = 0
    sent: int = 0
    failed: int = 0


class FeedbackRepository(Protocol):
    """Every method runs on a connection already inside the caller's transaction."""

    async def remember_contact(
        self, conn: Connection, shop_id: str, contact_key: str, card: ContactCard, now: datetime
    ) -> None: ...

    async def remember_order(
        self, conn: Connection, shop_id: str, contact_key: str, order: OrderCard
    ) -> None: ...

    async def contact(
        self, conn: Connection, shop_id: str, contact_key: str
    ) -> ContactCard | None: ...

    async def order(self, conn: Connection, shop_id: str, order_id: str) -> OrderCard | None: ...

    async def lock_answer(
        self, conn: Connection, shop_id: str, order_id: str, contact_key: str
    ) -> Answer | None:
        """The stored answer, with (shop, order, contact) locked until the transaction ends."""
        ...

    async def save_answer(self, conn: Connection, answer: Answer) -> None: ...

    async def add_alert(self, conn: Connection, alert: NewAlert) -> bool:
        """False when an alert with that webhook id already exists."""
        ...

    async def claim_due_alerts(
        self, conn: Connection, now: datetime, limit: int, lease_until: datetime
    ) -> list[DueAlert]:
        """Pending alerts due at `now`, pushed to `lease_until` so no one else takes them."""
        ...

    async def record_attempt(self, conn: Connection, record: AttemptRecord) -> None: ...

    async def disable_endpoint(
        self, conn: Connection, shop_id: str, url: str, now: datetime, reason: str
    ) -> None: ...

    async def enable_endpoint(self, conn: Connection, shop_id: str, url: str) -> None: ...

    async def answer_counts(
        self, conn: Connection, shop_id: str, start: datetime, end: datetime
    ) -> AnswerCounts: ...

    async def alert_counts(
        self, conn: Connection, shop_id: str, start: datetime, end: datetime
    ) -> AlertCounts: ...

    async def lock_leave_reason(
        self, conn: Connection, shop_id: str, message_id: str
    ) -> LeaveReasonRecord | None:
        """The stored reason, with (shop, message) locked until the transaction ends."""
        ...

    async def save_leave_reason(self, conn: Connection, record: LeaveReasonRecord) -> None: ...

    async def leave_reason_counts(
        self, conn: Connection, shop_id: str, start: datetime, end: datetime
    ) -> list[ReasonCount]:
        """Reasons given in `[start, end)` (by `given_at`), counted per plan, step, reason."""
        ...


class EventOutbox(Protocol):
    """The platform outbox: events staged here commit (or roll back) with `conn`'s transaction."""

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None: ...


class Inbox(Protocol):
    """The platform inbox: which of these event ids this consumer has not applied yet."""

    async def claim_new(
        self, conn: Connection, event_ids: Sequence[uuid.UUID]
    ) -> set[uuid.UUID]: ...


class WebhookSender(Protocol):
    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptOutcome:
        """Deliver once (POST, or a local write); never raises for I/O trouble, never
        follows a redirect."""
        ...
