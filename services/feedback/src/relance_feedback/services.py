"""Feedback use cases: record answers and leave reasons, learn contacts and orders, deliver
support alerts.

Publishing: `survey.answered` is staged in the platform outbox inside the answer's
transaction, so an answer is never stored without its event nor published without being
stored. Consumers dedupe by event id (`answer_id` + revision).

Alerts leave within seconds: the answer's transaction stores the alert as pending, and once
it commits the delivery worker of this process is woken; a worker in another process finds
it on its next poll (`idle_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import assert_never

from relance_events import Event, Payload, deterministic_id, new_event
from relance_events.payloads import ContactIdentified, OrderCompleted, SurveyAnswered
from relance_feedback.domain.alerts import (
    ContactCard,
    OrderCard,
    OrderLine,
    PayloadMode,
    alert_body,
)
from relance_feedback.domain.answers import Answer, Recorded, Submission, record
from relance_feedback.domain.delivery import (
    Delivered,
    DeliveryPolicy,
    GaveUp,
    HttpReply,
    RetryAt,
    decide,
)
from relance_feedback.domain.leave_reasons import (
    ReasonRecorded,
    ReasonSubmission,
    ReasonSummary,
    record_reason,
    summarise,
)
from relance_feedback.domain.signing import WebhookSecret, attempt_headers, webhook_id
from relance_feedback.domain.stats import AnswerCounts, Window, csat, nps, windows_ending_at
from relance_feedback.ports import (
    AlertCounts,
    AlertState,
    AttemptRecord,
    Connection,
    DueAlert,
    EventOutbox,
    FeedbackRepository,
    Inbox,
    NewAlert,
    Transactor,
    WebhookSender,
)
from relance_runtime.clock import Clock
from relance_runtime.consumer import Delivery
from relance_runtime.telemetry import current_trace_context, event_span

log = logging.getLogger("relance.feedback")
SOURCE = "feedback"


@dataclass(frozen=True, slots=True)
class AlertTarget:
    """Where and how support alerts go: the webhook URL, or the local alert file's URL."""

    url: str
    payload: PayloadMode = "full"
    public_url: str = "http://localhost:8000"


@dataclass(frozen=True, slots=True)
class WindowStats:
    window: Window
    answers: AnswerCounts
    csat: float | None
    nps: float | None
    alerts: AlertCounts


@dataclass(frozen=True, slots=True)
class WindowReasons:
    window: Window
    reasons: ReasonSummary


def survey_event(answer: Answer) -> Event[SurveyAnswered]:
    """The `survey.answered` event for one revision of an answer (id stable per revision)."""
    return new_event(
        SurveyAnswered(
            answer_id=str(answer.answer_id),
            order_id=answer.order_id,
            answer=answer.choice,
            nps=answer.nps,
            comment=answer.comment,
            message_id=answer.message_id,
            origin=answer.origin,
        ),
        shop_id=answer.shop_id,
        contact_key=answer.contact_key,
        source=SOURCE,
        occurred_at=answer.answered_at,
        event_id=deterministic_id("survey.answered", str(answer.answer_id), str(answer.revision)),
        trace=current_trace_context(),
    )


def alert_id_for(answer: Answer) -> uuid.UUID:
    return deterministic_id("feedback.alert", answer.shop_id, answer.order_id, answer.contact_key)


class FeedbackService:
    """Answers, contact/order cards and stats."""

    def __init__(
        self,
        repository: FeedbackRepository,
        transactor: Transactor,
        target: AlertTarget,
        events: EventOutbox,
        on_alert: Callable[[], None] | None = None,
    ) -> None:
        self._repo = repository
        self._tx = transactor
        self._target = target
        self._events = events
        self._on_alert = on_alert

    async def submit(self, submission: Submission, now: datetime) -> Recorded:
        """Record one answer and stage its event in one transaction, then wake the worker."""
        async with self._tx.transaction() as conn:
            outcome = await self.submit_in(conn, submission, now)
        if outcome.alert and self._on_alert is not None:
            self._on_alert()
        return outcome

    async def submit_in(self, conn: Connection, submission: Submission, now: datetime) -> Recorded:
        """The same, inside the caller's transaction (no wake-up)."""
        previous = await self._repo.lock_answer(
            conn, submission.shop_id, submission.order_id, submission.contact_key
        )
        outcome = record(previous, submission, now)
        if not outcome.changed:
            return outcome
        answer = outcome.answer
        await self._repo.save_answer(conn, answer)
        await self._events.add(conn, [survey_event(answer)])
        if outcome.alert:
            await self._create_alert(conn, answer, now)
        return outcome

    async def give_reason(self, submission: ReasonSubmission, now: datetime) -> ReasonRecorded:
        """Record why a contact left (no event, no alert, never an unsubscribe)."""
        async with self._tx.transaction() as conn:
            previous = await self._repo.lock_leave_reason(
                conn, submission.shop_id, submission.message_id
            )
            outcome = record_reason(previous, submission, now)
            if outcome.changed:
                await self._repo.save_leave_reason(conn, outcome.record)
        return outcome

    async def _create_alert(self, conn: Connection, answer: Answer, now: datetime) -> None:
        contact = await self._repo.contact(conn, answer.shop_id, answer.contact_key)
        order = await self._repo.order(conn, answer.shop_id, answer.order_id)
        body = alert_body(
            self._target.payload,
            answer=answer,
            contact=contact,
            order=order,
            public_url=self._target.public_url,
            created_at=now,
        )
        await self._repo.add_alert(
            conn,
            NewAlert(
                alert_id=alert_id_for(answer),
                shop_id=answer.shop_id,
                answer_id=answer.answer_id,
                order_id=answer.order_id,
                contact_key=answer.contact_key,
                webhook_id=webhook_id(answer.shop_id, answer.order_id, answer.contact_key),
                url=self._target.url,
                body=body,
                created_at=now,
                state="pending",
            ),
        )

    async def on_contact_identified(
        self, conn: Connection, event: Event[ContactIdentified]
    ) -> None:
        await self.remember_contact(
            conn, event.shop_id, event.contact_key, event.payload, event.occurred_at
        )

    async def remember_contact(
        self,
        conn: Connection,
        shop_id: str,
        contact_key: str,
        identified: ContactIdentified,
        at: datetime,
    ) -> None:
        traits = identified.traits
        card = ContactCard(traits.first_name, traits.last_name, traits.email, traits.phone)
        await self._repo.remember_contact(conn, shop_id, contact_key, card, at)

    async def on_order_completed(self, conn: Connection, event: Event[OrderCompleted]) -> None:
        await self.remember_order(
            conn, event.shop_id, event.contact_key, event.payload, event.occurred_at
        )

    async def remember_order(
        self,
        conn: Connection,
        shop_id: str,
        contact_key: str,
        order: OrderCompleted,
        at: datetime,
    ) -> None:
        card = OrderCard(
            order_id=order.order_id,
            ordered_at=at,
            total=order.total,
            currency=order.currency,
            items=tuple(
                OrderLine(item.product_id, item.name, item.quantity, item.price)
                for item in order.items
            ),
        )
        await self._repo.remember_order(conn, shop_id, contact_key, card)

    async def stats(
        self, shop_id: str, windows_days: tuple[int, ...], now: datetime
    ) -> list[WindowStats]:
        result: list[WindowStats] = []
        async with self._tx.transaction() as conn:
            for window in windows_ending_at(now, windows_days):
                counts = await self._repo.answer_counts(conn, shop_id, window.start, window.end)
                alerts = await self._repo.alert_counts(conn, shop_id, window.start, window.end)
                result.append(WindowStats(window, counts, csat(counts), nps(counts), alerts))
        return result

    async def reason_stats(
        self, shop_id: str, windows_days: tuple[int, ...], now: datetime
    ) -> list[WindowReasons]:
        result: list[WindowReasons] = []
        async with self._tx.transaction() as conn:
            for window in windows_ending_at(now, windows_days):
                counts = await self._repo.leave_reason_counts(
                    conn, shop_id, window.start, window.end
                )
                result.append(WindowReasons(window, summarise(counts)))
        return result


@dataclass(frozen=True, slots=True)
class AttemptReport:
    alert_id: uuid.UUID
    webhook_id: str
    attempt: int
    state: AlertState
    status: int | None
    error: str | None
    next_attempt_at: datetime | None


@dataclass
class AlertDelivery:
    """Sends due support alerts: claim, sign, POST, record, schedule the next attempt."""

    repository: FeedbackRepository
    transactor: Transactor
    sender: WebhookSender
    secrets: tuple[WebhookSecret, ...]
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    batch: int = 20
    timeout_s: float = 15.0
    # `webhook-timestamp` is checked by receivers against their own clock (5 minutes), so
    # the composition root passes the wall clock; scheduling keeps the business `now`,
    # which tests may shift. Without one, the attempt's `now` signs (deterministic tests).
    signing_clock: Callable[[], datetime] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def wake(self) -> None:
        """Ask the running loop to look for due alerts now (an alert was just created)."""
        self._wake.set()

    async def deliver_due(self, now: datetime) -> list[AttemptReport]:
        """One pass: every alert due at `now`, sent concurrently, each attempt recorded."""
        lease_until = now + timedelta(seconds=self.timeout_s + 60)
        async with self.transactor.transaction() as conn:
            due = await self.repository.claim_due_alerts(conn, now, self.batch, lease_until)
        if not due:
            return []
        return list(await asyncio.gather(*(self._attempt(alert, now) for alert in due)))

    async def _attempt(self, alert: DueAlert, now: datetime) -> AttemptReport:
        attempt = alert.attempts + 1
        if alert.endpoint_disabled:
            record = AttemptRecord(
                alert.alert_id, alert.shop_id, alert.attempts, now, 0, None,
                "endpoint disabled after http 410", "failed", None,
            )  # fmt: skip
            await self._store(record, alert, disable=False, now=now)
            return self._report(alert, record)
        signed_at = self.signing_clock() if self.signing_clock is not None else now
        headers = attempt_headers(self.secrets, alert.webhook_id, signed_at, alert.body)
        started = time.monotonic()
        outcome = await self.sender.send(alert.url, headers, alert.body)
        duration_ms = int((time.monotonic() - started) * 1000)
        decision = decide(
            outcome, attempt=attempt, now=now, policy=self.policy, seed=alert.webhook_id
        )
        status = outcome.status if isinstance(outcome, HttpReply) else None
        disable = False
        match decision:
            case Delivered():
                state: AlertState = "sent"
                error, next_at = None, None
            case RetryAt(at=at, reason=reason):
                state, error, next_at = "pending", reason, at
            case GaveUp(reason=reason, disable_endpoint=disable):
                state, error, next_at = "failed", reason, None
            case _:
                assert_never(decision)
        record = AttemptRecord(
            alert.alert_id, alert.shop_id, attempt, now, duration_ms, status, error, state, next_at
        )
        await self._store(record, alert, disable=disable, now=now)
        log.info(
            "support alert attempt",
            extra={"webhook_id": alert.webhook_id, "attempt": attempt, "state": state,
                   "status": status, "error": error},
        )  # fmt: skip
        return self._report(alert, record)

    async def _store(
        self, record: AttemptRecord, alert: DueAlert, *, disable: bool, now: datetime
    ) -> None:
        async with self.transactor.transaction() as conn:
            await self.repository.record_attempt(conn, record)
            if disable:
                await self.repository.disable_endpoint(
                    conn, alert.shop_id, alert.url, now, "http 410 gone"
                )

    @staticmethod
    def _report(alert: DueAlert, record: AttemptRecord) -> AttemptReport:
        return AttemptReport(
            alert.alert_id, alert.webhook_id, record.attempt, record.state,
            record.status, record.error, record.next_attempt_at,
        )  # fmt: skip

    async def run(self, clock: Clock, stop: asyncio.Event, idle_s: float = 1.0) -> None:
        """Deliver until `stop` is set: on every wake-up, and at least every `idle_s`."""
        while not stop.is_set():
            self._wake.clear()
            try:
                reports = await self.deliver_due(clock.now())
            except Exception:
                log.exception("support alert delivery pass failed")
                reports = []
            if len(reports) >= self.batch:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(idle_s):
                    waiters = {asyncio.ensure_future(self._wake.wait()),
                               asyncio.ensure_future(stop.wait())}  # fmt: skip
                    try:
                        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiter in waiters:
                            waiter.cancel()


class ContactsAndOrders:
    """The consumer's batch handler: remembers contact details and orders for alerts.

    The whole batch is one transaction with the inbox, so a redelivered batch (crash,
    rebalance) changes nothing twice. Other event types are skipped without a transaction.
    """

    def __init__(self, service: FeedbackService, transactor: Transactor, inbox: Inbox) -> None:
        self._service = service
        self._tx = transactor
        self._inbox = inbox

    async def __call__(self, deliveries: Sequence[Delivery]) -> None:
        wanted = [d.event for d in deliveries if _remembered(d.event)]
        if not wanted:
            return
        async with self._tx.transaction() as conn:
            new = await self._inbox.claim_new(conn, [e.event_id for e in wanted])
            for event in wanted:
                if event.event_id not in new:
                    continue
                new.discard(event.event_id)  # the same event twice in a batch: once
                with event_span("feedback.remember", event):
                    await self._apply(conn, event)

    async def _apply(self, conn: Connection, event: Event[Payload]) -> None:
        shop, contact, at = event.shop_id, event.contact_key, event.occurred_at
        payload = event.payload
        if isinstance(payload, ContactIdentified):
            await self._service.remember_contact(conn, shop, contact, payload, at)
        elif isinstance(payload, OrderCompleted):
            await self._service.remember_order(conn, shop, contact, payload, at)


def _remembered(event: Event[Payload]) -> bool:
    return isinstance(event.payload, (ContactIdentified, OrderCompleted))
