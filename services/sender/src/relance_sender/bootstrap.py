"""Composition root of the sender service: wires adapters to the platform.

- A consumer of message requests (sent through the ledger, exactly once in effect) and of
  `contact.consent_changed` (kept in the sender's consent table, inbox in the same
  transaction).
- At start, rows a crash left `sending` are recovered; then a background task retries what
  is due and recovers expired leases.
- HTTP: the Twilio inbound SMS webhook (`POST /v1/sms/inbound/twilio/{shop_id}`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from fastapi import FastAPI
from opentelemetry import metrics
from opentelemetry.trace import StatusCode

from relance_events import Event
from relance_events.payloads import ConsentChanged, MessageRequested
from relance_runtime.consumer import Delivery
from relance_runtime.host import ServiceComponent
from relance_runtime.inbox import claim_new
from relance_runtime.platform import Platform
from relance_runtime.registry import ServiceName
from relance_runtime.service import Component
from relance_runtime.telemetry import event_span, start_event_span
from relance_sender.adapters.otel_metrics import SENDER_METER, OtelSenderMetrics
from relance_sender.adapters.postgres_ledger import PostgresSenderStore, PostgresSenderTx
from relance_sender.domain.request import SendRequest
from relance_sender.failpoints import kill_at
from relance_sender.http import SenderHttpDeps, build_router
from relance_sender.services import SendResult, consent_record
from relance_sender.settings import SenderSettings
from relance_sender.wiring import Sender, build_sender

SERVICE: Final[ServiceName] = "sender"
log = logging.getLogger("relance_sender")


def settings_for(platform: Platform) -> SenderSettings:
    """`RELANCE_SENDER_*` plus what the platform already decided: the public URL and,
    unless set explicitly, the outbox directory under the data directory."""
    settings = SenderSettings()
    update: dict[str, Any] = {"public_url": platform.settings.public_url}
    if "outbox_dir" not in settings.model_fields_set:
        update["outbox_dir"] = platform.settings.data_dir / "outbox"
    return settings.model_copy(update=update)


class SenderHandler:
    """One consumer batch, in order: runs of message requests are sent concurrently (the
    ledger makes each idempotent), claimed `claim_batch` at a time in one transaction, two
    groups in flight (one claims and renders while the other delivers); runs of consent
    changes go in one transaction with the inbox claim."""

    def __init__(
        self, platform: Platform, sender: Sender, *, concurrency: int, claim_batch: int
    ) -> None:
        self._platform = platform
        self._sender = sender
        self._slots = asyncio.Semaphore(concurrency)
        self._groups = asyncio.Semaphore(2)
        self._claim_batch = claim_batch

    async def __call__(self, deliveries: Sequence[Delivery]) -> None:
        requests: list[Event[MessageRequested]] = []
        consents: list[Event[ConsentChanged]] = []
        for delivery in deliveries:
            payload = delivery.event.payload
            if isinstance(payload, MessageRequested):
                await self._consents(consents)
                requests.append(delivery.event)  # type: ignore[arg-type]
            elif isinstance(payload, ConsentChanged):
                await self._requests(requests)
                consents.append(delivery.event)  # type: ignore[arg-type]
        await self._consents(consents)
        await self._requests(requests)

    async def _send_group(self, events: Sequence[Event[MessageRequested]]) -> None:
        async with self._groups:
            # One span per message, from the group's start to that message's own end.
            spans = [start_event_span("sender.send", e) for e in events]
            ended: set[int] = set()

            def settled(n: int, result: SendResult) -> None:
                spans[n].set_attribute("relance.send_result", result.kind)
                spans[n].end()
                ended.add(n)

            try:
                await self._sender.send.handle_many(
                    [SendRequest.from_event(e) for e in events],
                    slots=self._slots,
                    on_result=settled,
                )
            except BaseException as exc:
                for n, span in enumerate(spans):
                    if n not in ended:
                        span.record_exception(exc)
                        span.set_status(StatusCode.ERROR, type(exc).__name__)
                        span.end()
                raise

    async def _requests(self, events: list[Event[MessageRequested]]) -> None:
        if not events:
            return
        batch = list(events)
        events.clear()
        size = self._claim_batch
        groups = [batch[i : i + size] for i in range(0, len(batch), size)]
        results = await asyncio.gather(*map(self._send_group, groups), return_exceptions=True)
        # Every send settles before a failure is raised: the loop then retries the batch
        # (BusUnavailable is a TransientError) and the ledger turns the repeats into no-ops.
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _consents(self, events: list[Event[ConsentChanged]]) -> None:
        if not events:
            return
        batch = list(events)
        events.clear()
        async with self._platform.pool.acquire() as conn, conn.transaction():
            new = await claim_new(conn, SERVICE, [e.event_id for e in batch])
            tx = PostgresSenderTx(conn)
            for event in batch:
                if event.event_id in new:
                    with event_span("sender.consent", event):
                        await tx.record_consent(consent_record(event))


class SenderComponent(Component):
    """Recovers interrupted sends before consuming anything."""

    def __init__(self, sender: Sender, **kwargs: Any) -> None:
        super().__init__(SERVICE, **kwargs)
        self.sender = sender

    async def start(self) -> None:
        report = await self.sender.send.recover_interrupted()
        if report.ambiguous or report.resend:
            log.warning(
                "recovered interrupted sends",
                extra={"ambiguous": report.ambiguous, "resend": report.resend},
            )
        await super().start()


def build(platform: Platform) -> ServiceComponent:
    settings = settings_for(platform)
    sender = build_sender(
        settings,
        store=PostgresSenderStore(platform.pool),
        publisher=platform.bus,
        clock=platform.clock,
        signer=platform.tokens,
        # The process's meter provider (RELANCE_OTEL_EXPORTER) exports them.
        metrics=OtelSenderMetrics(metrics.get_meter(SENDER_METER)),
        failpoint=kill_at(settings.failpoint) if settings.failpoint else None,
    )
    handler = SenderHandler(
        platform, sender, concurrency=settings.concurrency, claim_batch=settings.claim_batch
    )
    consumers = platform.consumers_for(SERVICE, handler)

    async def retry_due() -> None:
        while True:
            try:
                await sender.send.recover_interrupted(own=False)
                results = await sender.send.run_due(limit=settings.due_batch)
            except Exception:
                log.exception("retrying due sends failed")
                results = []
            if len(results) < settings.due_batch:
                await asyncio.sleep(settings.due_poll_s)

    router = build_router(
        SenderHttpDeps(
            inbound_sms=sender.inbound_sms,
            delivery_reports=sender.delivery_reports,
            public_url=platform.settings.public_url,
            twilio_auth_token=(
                settings.sms_auth_token if settings.sms_provider == "twilio" else None
            ),
        )
    )
    return SenderComponent(
        sender,
        routers=[router],
        consumers=consumers,
        background=[retry_due],
        on_stop=[sender.close],
    )


def configure_app(app: FastAPI) -> None:
    """Hook run when the app is created (ASGI middleware goes here)."""
    del app
