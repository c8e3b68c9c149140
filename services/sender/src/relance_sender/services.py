"""The sender's use cases: send one message exactly once in effect, retry what is due,
recover rows a dead process left `sending`, keep consent, and handle SMS keywords.

The clock is read here, at the edge, and `now` is passed to the pure core.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, assert_never

from relance_events import Event, deterministic_id, new_event
from relance_events.payloads import (
    ConsentChanged,
    MessageBounced,
    MessageDelivered,
    MessageFailed,
    MessageRequested,
    MessageSent,
    Payload,
)
from relance_runtime.bus.ports import Publisher
from relance_runtime.clock import Clock
from relance_sender.adapters.memory_metrics import CountingMetrics
from relance_sender.domain import ledger
from relance_sender.domain.keywords import keyword_intent
from relance_sender.domain.ledger import TERMINAL, Channel, LedgerRow, SendState
from relance_sender.domain.outcome import (
    TWILIO_OPTED_OUT,
    Accepted,
    Ambiguous,
    BounceKind,
    Deferred,
    Delivered,
    DeliveryOutcome,
    DeliveryReport,
    Rejected,
    RetryPolicy,
    Undelivered,
)
from relance_sender.domain.policy import (
    Blocked,
    ConsentRecord,
    Suppression,
    may_send,
    suppression_for_bounce,
)
from relance_sender.domain.request import SendRequest
from relance_sender.email_message import BuiltEmail, EmailBuilder
from relance_sender.errors import InvalidRecipient, RenderError
from relance_sender.ports import (
    EmailTransport,
    OutgoingSms,
    SendCheck,
    SenderMetrics,
    SenderStore,
    SenderTx,
    SendMetric,
    SmsTransport,
)
from relance_sender.recipients import is_french_number, normalize_phone, recipient_address
from relance_sender.rendering.renderer import Renderer

log = logging.getLogger("relance_sender")

SOURCE = "sender"

Failpoint = Literal["after_smtp_250", "after_ledger_commit"]
FailpointHook = Callable[[Failpoint], None]

SendResultKind = Literal["sent", "failed", "retry_scheduled", "ambiguous", "duplicate", "busy"]


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    kind: SendResultKind
    state: SendState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    ambiguous: int
    resend: int


@dataclass
class _Effects:
    """What a transaction decided besides its writes: status events to publish and counts
    to add, both only once it committed."""

    events: list[Event[Any]] = field(default_factory=list)
    counts: list[tuple[SendMetric, Channel, dict[str, str]]] = field(default_factory=list)

    def count(self, metric: SendMetric, channel: Channel, **labels: str) -> None:
        self.counts.append((metric, channel, labels))


@dataclass(frozen=True, slots=True)
class _Prepared:
    row: LedgerRow
    request: SendRequest
    email: BuiltEmail | None = None
    sms: OutgoingSms | None = None


def _event(payload: Payload, row: LedgerRow, now: datetime, *key: str) -> Event[Any]:
    return new_event(
        payload,
        shop_id=row.shop_id,
        contact_key=row.contact_key,
        source=SOURCE,
        occurred_at=now,
        event_id=deterministic_id(payload.TYPE, row.message_id, *key),
    )


class SendMessage:
    """Ledger -> checks -> render -> deliver -> ledger -> status events."""

    def __init__(
        self,
        *,
        store: SenderStore,
        emails: EmailBuilder,
        renderer: Renderer,
        email_transport: EmailTransport,
        sms_transport: SmsTransport | None,
        publisher: Publisher,
        clock: Clock,
        owner: str,
        retry: RetryPolicy | None = None,
        sending_lease: timedelta = timedelta(minutes=15),
        metrics: SenderMetrics | None = None,
        failpoint: FailpointHook | None = None,
    ) -> None:
        self._failpoint = failpoint
        self._store = store
        self._emails = emails
        self._renderer = renderer
        self._email = email_transport
        self._sms = sms_transport
        self._publisher = publisher
        self._clock = clock
        self._owner = owner
        self._retry = retry or RetryPolicy()
        self._lease = sending_lease
        self.metrics: SenderMetrics = metrics or CountingMetrics()

    async def handle_event(self, event: Event[MessageRequested]) -> SendResult:
        return await self.handle(SendRequest.from_event(event))

    async def handle(self, request: SendRequest) -> SendResult:
        """Send one requested message at most once; a redelivery of a settled one only
        republishes its status event (same event id, consumers dedupe)."""
        return (await self.handle_many([request]))[0]

    async def handle_many(
        self,
        requests: Sequence[SendRequest],
        *,
        slots: asyncio.Semaphore | None = None,
        on_result: Callable[[int, SendResult], None] | None = None,
    ) -> list[SendResult]:
        """`handle` for a batch: one claiming transaction for all of them (insert, checks,
        render, claim: a handful of statements whatever the size), then the deliveries run
        concurrently (at most `slots` at once) and each settles as soon as it is done.
        Results are in the order of `requests`; `on_result(index, result)` hears each one
        as soon as it is known (a span per message ends there)."""
        now = self._clock.now()
        effects = _Effects()
        results: list[SendResult | None] = [None] * len(requests)
        firsts: dict[str, int] = {}
        for n, request in enumerate(requests):
            firsts.setdefault(request.message_id, n)
        claimable: list[tuple[int, LedgerRow, SendRequest]] = []
        prepared: list[tuple[int, _Prepared]] = []
        async with self._store.transaction() as tx:
            # Insert first: new messages (the usual case) are inserted and locked in one
            # statement; only redeliveries read the rows they collided with.
            fresh: dict[int, LedgerRow] = {}
            for n in firsts.values():
                r = requests[n]
                fresh[n] = ledger.new_row(
                    message_id=r.message_id,
                    shop_id=r.shop_id,
                    contact_key=r.contact_key,
                    channel=r.channel,
                    purpose=r.purpose,
                    plan=r.plan,
                    step=r.step,
                    now=now,
                    request=r.to_json(),
                )
            inserted = await tx.insert_many(list(fresh.values()))
            existing = await tx.lock_many(
                [row.message_id for row in fresh.values() if row.message_id not in inserted]
            )
            for n, new_row in fresh.items():
                row = new_row if new_row.message_id in inserted else existing[new_row.message_id]
                if row.state in TERMINAL:
                    effects.count("duplicate", row.channel)
                    self._republish(row, effects.events)
                    results[n] = SendResult(row.message_id, "duplicate", row.state, row.last_error)
                elif row.state == "sending" or not ledger.is_due(row, now):
                    results[n] = SendResult(row.message_id, "busy", row.state)
                else:
                    claimable.append((n, row, requests[n]))
            for n, outcome in zip(
                (n for n, _, _ in claimable),
                await self._prepare_many(tx, [(row, r) for _, row, r in claimable], now, effects),
                strict=True,
            ):
                if isinstance(outcome, _Prepared):
                    prepared.append((n, outcome))
                else:
                    results[n] = SendResult(
                        outcome.message_id, "failed", outcome.state, outcome.last_error
                    )
        # Counted now; their status events are published after the deliveries: a bus
        # failure here must not leave the claims just committed undelivered (`sending`).
        for metric, channel, labels in effects.counts:
            self.metrics.count(metric, channel, **labels)
        if on_result is not None:
            for n, known in enumerate(results):
                if known is not None:
                    on_result(n, known)

        async def deliver(n: int, prepared: _Prepared) -> SendResult:
            if slots is None:
                result = await self._deliver_and_settle(prepared)
            else:
                async with slots:
                    result = await self._deliver_and_settle(prepared)
            if on_result is not None:
                on_result(n, result)
            return result

        sent = await asyncio.gather(*(deliver(n, p) for n, p in prepared), return_exceptions=True)
        await self._publish(effects.events)
        for (n, _), result in zip(prepared, sent, strict=True):
            if isinstance(result, BaseException):
                raise result  # after every send settled; the ledger makes a retry a no-op
            results[n] = result
        for n, request in enumerate(requests):
            if results[n] is None:  # the same message twice in the batch: the first sends
                first = results[firsts[request.message_id]]
                assert first is not None
                again = SendResult(request.message_id, "busy", first.state)
                results[n] = again
                if on_result is not None:
                    on_result(n, again)
        return [r for r in results if r is not None]

    async def run_due(self, *, limit: int = 100) -> list[SendResult]:
        """Retry pending rows whose next attempt is due (temporary refusals, recovered
        transactional mail). Call it periodically."""
        now = self._clock.now()
        batch: list[_Prepared] = []
        effects = _Effects()
        async with self._store.transaction() as tx:
            retries: list[tuple[LedgerRow, SendRequest]] = []
            unusable: list[LedgerRow] = []
            for row in await tx.claim_due(now, limit):
                if row.request is None:
                    unusable.append(ledger.block(row, reason="no stored request to retry", now=now))
                    effects.count("failed", row.channel, cause="no_request")
                else:
                    retries.append((row, SendRequest.from_json(row.request)))
            await tx.save_many(unusable)
            for outcome in await self._prepare_many(tx, retries, now, effects):
                if isinstance(outcome, _Prepared):
                    batch.append(outcome)
        for metric, channel, labels in effects.counts:
            self.metrics.count(metric, channel, **labels)
        # Delivered before the failure events are published, as in `handle_many`.
        sent = await asyncio.gather(
            *(self._deliver_and_settle(p) for p in batch), return_exceptions=True
        )
        await self._publish(effects.events)
        results = []
        for result in sent:
            if isinstance(result, BaseException):
                raise result
            results.append(result)
        return results

    async def recover_interrupted(self, *, limit: int = 1000, own: bool = True) -> RecoveryReport:
        """At start-up (`own`): rows this instance left `sending`, and any whose lease ran
        out; periodically (`own=False`): only expired leases, e.g. of a host gone for good.

        Marketing rows become `ambiguous` (never resent, counted); transactional rows go
        back to `pending` and `run_due` resends them with the same Message-ID.
        """
        now = self._clock.now()
        ambiguous = resend = 0
        async with self._store.transaction() as tx:
            rows = await tx.interrupted(
                owner=self._owner if own else None,
                lease_expired_before=now - self._lease,
                limit=limit,
            )
            recovered = [ledger.recover(row, now=now) for row in rows]
            for row in recovered:
                await tx.save(row)
        # Counted once the transaction committed: a rolled-back recovery happens again.
        for row in recovered:
            if row.state == "ambiguous":
                ambiguous += 1
                self.metrics.count("ambiguous", row.channel, during="recovery")
                log.warning(
                    "message left sending by a crash; not resent",
                    extra={"message_id": row.message_id, "plan": row.plan},
                )
            else:
                resend += 1
                self.metrics.count("recovered_for_resend", row.channel)
        return RecoveryReport(ambiguous=ambiguous, resend=resend)

    # --- steps ------------------------------------------------------------------------

    async def _prepare_many(
        self,
        tx: SenderTx,
        claimable: Sequence[tuple[LedgerRow, SendRequest]],
        now: datetime,
        effects: _Effects,
    ) -> list[_Prepared | LedgerRow]:
        """Checks and render inside the claiming transaction: an unsubscribe committed
        before this transaction is always seen, and the claims commit before any send.
        Per row: what to deliver, or the row as it failed (blocked, unrenderable...)."""
        outcomes: list[_Prepared | LedgerRow | None] = [None] * len(claimable)
        writes: list[LedgerRow] = []

        def fail(n: int, why: str, metric: SendMetric, **labels: str) -> None:
            row = claimable[n][0]
            failed = ledger.block(row, reason=why, now=now)
            writes.append(failed)
            effects.events.append(self._failed_event(failed, why, now))
            effects.count(metric, row.channel, **labels)
            outcomes[n] = failed

        checked: list[tuple[int, str]] = []
        for n, (_, request) in enumerate(claimable):
            if request.expired(now):
                fail(n, "expired: not_after passed before the send", "failed", cause="expired")
                continue
            try:
                checked.append((n, recipient_address(request.channel, request.contact)))
            except InvalidRecipient as exc:
                fail(n, f"invalid recipient: {exc}", "failed", cause="recipient")
        found = await tx.send_checks_many(
            [
                SendCheck(r.shop_id, r.contact_key, r.channel, r.purpose, address)
                for r, address in ((claimable[n][1], address) for n, address in checked)
            ]
        )
        for (n, address), (suppression, consent) in zip(checked, found, strict=True):
            row, request = claimable[n]
            decision = may_send(
                channel=request.channel,
                purpose=request.purpose,
                suppression=suppression,
                consent=consent,
            )
            if isinstance(decision, Blocked):
                fail(n, decision.reason, "suppressed", reason=decision.cause)
                continue
            email: BuiltEmail | None = None
            sms: OutgoingSms | None = None
            try:
                if request.channel == "email":
                    email = self._emails.build(request, to=address, now=now)
                else:
                    text = self._renderer.render_sms(
                        request, french_number=is_french_number(address)
                    ).text
                    sms = OutgoingSms(message_id=request.message_id, to=address, body=text)
            except RenderError as exc:
                log.error(
                    "render failed",
                    extra={"message_id": request.message_id, "template": exc.template},
                )
                fail(n, f"render error: {exc}", "failed", cause="render")
                continue
            claimed = ledger.claim(row, now=now, owner=self._owner, address=address)
            writes.append(claimed)
            outcomes[n] = _Prepared(claimed, request, email, sms)
        await tx.save_many(writes)
        return [o for o in outcomes if o is not None]

    async def _deliver(self, prepared: _Prepared) -> DeliveryOutcome:
        try:
            if prepared.email is not None:
                return await self._email.send(prepared.email)
            if prepared.sms is not None:
                if self._sms is None:
                    return Rejected(reason="no SMS provider configured")
                return await self._sms.send(prepared.sms)
        except Exception as exc:  # an adapter bug must not turn into a resend
            log.exception("transport raised", extra={"message_id": prepared.row.message_id})
            return Ambiguous(reason=f"transport raised {type(exc).__name__}: {exc}")
        return Rejected(reason="nothing to deliver")

    def _hit(self, point: Failpoint) -> None:
        if self._failpoint is not None:
            self._failpoint(point)

    async def _deliver_and_settle(self, prepared: _Prepared) -> SendResult:
        outcome = await self._deliver(prepared)
        if isinstance(outcome, Accepted) and prepared.email is not None:
            self._hit("after_smtp_250")
        now = self._clock.now()
        claimed = prepared.row
        # Unchanged since the claim (the save below checks it), so settling our copy is
        # settling the ledger's.
        settled = ledger.settle(claimed, outcome, now=now, retry=self._retry)
        effects = _Effects()
        self._status(settled, outcome, now, effects)
        if isinstance(outcome, Rejected) and outcome.bounce is not None:
            # The bounce writes the suppression list too: one transaction for both.
            async with self._store.transaction() as tx:
                row = await tx.lock(claimed.message_id)
                if not _still_claimed(row, claimed):
                    return self._lost_claim(claimed, row)
                await tx.save(settled)
                await record_bounce(
                    tx,
                    settled,
                    outcome.bounce,
                    outcome.code,
                    suppress_now=outcome.suppress,
                    now=now,
                    effects=effects,
                    opt_out=settled.channel == "sms" and outcome.suppress,
                )
        elif not await self._store.save_claimed(settled, claimed=claimed):
            async with self._store.transaction() as tx:
                return self._lost_claim(claimed, await tx.lock(claimed.message_id))
        self._hit("after_ledger_commit")
        await self._committed(effects)
        return self._result(settled, outcome)

    def _lost_claim(self, claimed: LedgerRow, row: LedgerRow | None) -> SendResult:
        """Recovery took the row over meanwhile (its lease ran out): its verdict stands."""
        self.metrics.count("lost_claim", claimed.channel)
        state: SendState = row.state if row is not None else "failed"
        return SendResult(claimed.message_id, "busy", state)

    def _status(
        self, row: LedgerRow, outcome: DeliveryOutcome, now: datetime, effects: _Effects
    ) -> None:
        """The status event and counts of a settled attempt (a bounce adds its own)."""
        events = effects.events
        match outcome:
            case Accepted():
                effects.count("sent", row.channel)
                events.append(self._sent_event(row, now))
            case Rejected(reason=reason):
                effects.count("failed", row.channel, cause="refused")
                events.append(self._failed_event(row, reason, now))
            case Deferred(reason=reason):
                if row.state == "failed":
                    effects.count("failed", row.channel, cause="gave_up")
                    events.append(self._failed_event(row, row.last_error or reason, now))
                else:
                    effects.count("deferred", row.channel)
            case Ambiguous(reason=reason):
                effects.count("ambiguous", row.channel, during="delivery")
                log.warning(
                    "delivery outcome unknown; not resent",
                    extra={"message_id": row.message_id, "reason": reason},
                )
            case _:
                assert_never(outcome)

    def _result(self, row: LedgerRow, outcome: DeliveryOutcome) -> SendResult:
        match row.state:
            case "sent":
                return SendResult(row.message_id, "sent", row.state)
            case "pending":
                return SendResult(row.message_id, "retry_scheduled", row.state, row.last_error)
            case "ambiguous":
                return SendResult(row.message_id, "ambiguous", row.state, row.last_error)
            case _:
                return SendResult(row.message_id, "failed", row.state, row.last_error)

    # --- status events ----------------------------------------------------------------

    def _sent_event(self, row: LedgerRow, now: datetime) -> Event[Any]:
        return _event(
            MessageSent(
                message_id=row.message_id,
                channel=row.channel,
                plan=row.plan,
                step=row.step,
                provider_message_id=row.provider_message_id,
            ),
            row,
            now,
        )

    def _failed_event(self, row: LedgerRow, reason: str, now: datetime) -> Event[Any]:
        return _event(
            MessageFailed(
                message_id=row.message_id,
                channel=row.channel,
                reason=reason[:1000],
                permanent=True,
                plan=row.plan,
                step=row.step,
            ),
            row,
            now,
        )

    def _republish(self, row: LedgerRow, events: list[Event[Any]]) -> None:
        """Same event id as the first time: consumers drop the copy if they had it."""
        if row.state == "sent":
            events.append(self._sent_event(row, row.updated_at))
        elif row.state == "failed":
            events.append(self._failed_event(row, row.last_error or "failed", row.updated_at))

    async def _committed(self, effects: _Effects) -> None:
        """After the commit: count, then publish (a bus failure leaves the counts right)."""
        for metric, channel, labels in effects.counts:
            self.metrics.count(metric, channel, **labels)
        await self._publish(effects.events)

    async def _publish(self, events: Sequence[Event[Any]]) -> None:
        if events:
            await self._publisher.publish(events)


def _still_claimed(row: LedgerRow | None, claimed: LedgerRow) -> bool:
    return (
        row is not None
        and row.state == "sending"
        and row.owner == claimed.owner
        and row.attempts == claimed.attempts
    )


async def record_bounce(
    tx: SenderTx,
    row: LedgerRow,
    kind: BounceKind,
    code: str | None,
    *,
    suppress_now: bool,
    opt_out: bool,
    now: datetime,
    effects: _Effects,
) -> None:
    """`message.bounced`, and the address suppressed at once (`suppress_now`) or after
    repeated soft bounces; `opt_out`: the provider says its owner opted out."""
    if row.address is None:
        return
    bounces = 0
    if not suppress_now:
        bounces = await tx.count_soft_bounce(row.shop_id, row.channel, row.address, now)
    reason = suppression_for_bounce(suppress_now=suppress_now, bounces=bounces)
    if reason is not None:
        if opt_out:
            reason = "provider_opt_out"
        await tx.suppress(Suppression(row.shop_id, row.channel, row.address, reason, now))
    effects.count("bounced", row.channel, kind=kind)
    bounced = MessageBounced(
        message_id=row.message_id, channel=row.channel, kind=kind, code=code, address=row.address
    )
    effects.events.append(_event(bounced, row, now))


DeliveryReportAction = Literal["delivered", "bounced", "ignored"]


class RecordDeliveryReport:
    """A provider's delivery report on a message it accepted (Twilio's StatusCallback):
    `message.delivered`, or a bounce (a dead or opted-out number is suppressed, soft ones
    count towards the repeated-bounce limit). Providers repeat reports: a repeat changes
    nothing and republishes the same event id."""

    def __init__(
        self,
        *,
        store: SenderStore,
        publisher: Publisher,
        clock: Clock,
        metrics: SenderMetrics | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self.metrics: SenderMetrics = metrics or CountingMetrics()

    async def handle(self, *, message_id: str, report: DeliveryReport) -> DeliveryReportAction:
        now = self._clock.now()
        effects = _Effects()
        action: DeliveryReportAction = "ignored"
        async with self._store.transaction() as tx:
            row = await tx.lock(message_id)
            if row is None or row.state not in ("sent", "ambiguous"):
                return "ignored"
            match report:
                case Delivered():
                    delivered = MessageDelivered(message_id=row.message_id, channel=row.channel)
                    effects.events.append(_event(delivered, row, now))
                    effects.count("delivered", row.channel)
                    action = "delivered"
                case Undelivered(reason=reason, code=code, bounce=kind, suppress=suppress_now):
                    action = "bounced"
                    if row.last_error == reason:  # this very report, again: republish only
                        bounced = MessageBounced(
                            message_id=row.message_id,
                            channel=row.channel,
                            kind=kind,
                            code=code,
                            address=row.address,
                        )
                        effects.events.append(_event(bounced, row, now))
                    else:
                        await tx.save(ledger.note_undelivered(row, reason=reason, now=now))
                        await record_bounce(
                            tx,
                            row,
                            kind,
                            code,
                            suppress_now=suppress_now,
                            now=now,
                            effects=effects,
                            opt_out=code == str(TWILIO_OPTED_OUT),
                        )
                case _:
                    assert_never(report)
        for metric, channel, labels in effects.counts:
            self.metrics.count(metric, channel, **labels)
        if effects.events:
            await self._publisher.publish(effects.events)
        return action


def consent_record(event: Event[ConsentChanged]) -> ConsentRecord:
    p = event.payload
    return ConsentRecord(
        shop_id=event.shop_id,
        contact_key=event.contact_key,
        channel=p.channel,
        purpose=p.purpose,
        status=p.status,
        at=event.occurred_at,
    )


class RecordConsent:
    """Keep the latest consent per contact from `contact.consent_changed` events."""

    def __init__(self, store: SenderStore) -> None:
        self._store = store

    async def handle(self, event: Event[ConsentChanged]) -> bool:
        async with self._store.transaction() as tx:
            return await tx.record_consent(consent_record(event))


InboundAction = Literal["objection", "resubscription", "ignored"]


class HandleInboundSms:
    """STOP / ARRET... from a number: suppress it and record the objection for every
    contact we sent to at that number; START / UNSTOP undoes both."""

    def __init__(self, *, store: SenderStore, publisher: Publisher, clock: Clock) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock

    async def handle(
        self, *, shop_id: str, from_number: str, body: str, provider_message_id: str | None
    ) -> InboundAction:
        intent = keyword_intent(body)
        if intent is None:
            return "ignored"
        now = self._clock.now()
        number = normalize_phone(from_number, None)
        status: Literal["granted", "denied"] = "denied" if intent == "objection" else "granted"
        events: list[Event[Any]] = []
        async with self._store.transaction() as tx:
            if intent == "objection":
                await tx.suppress(Suppression(shop_id, "sms", number, "sms_keyword", now))
            else:
                await tx.unsuppress(shop_id, "sms", number)
            for contact_key in await tx.find_contacts(shop_id, "sms", number):
                record = ConsentRecord(shop_id, contact_key, "sms", "marketing", status, now)
                await tx.record_consent(record)
                events.append(
                    new_event(
                        ConsentChanged(
                            channel="sms", purpose="marketing", status=status, origin="sms_keyword"
                        ),
                        shop_id=shop_id,
                        contact_key=contact_key,
                        source=SOURCE,
                        occurred_at=now,
                        event_id=deterministic_id(
                            "sms_keyword",
                            shop_id,
                            contact_key,
                            number,
                            provider_message_id or now.isoformat(),
                        ),
                    )
                )
        if events:
            await self._publisher.publish(events)
        return intent
