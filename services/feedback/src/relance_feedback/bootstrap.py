"""Composition root of the feedback service: wires adapters to the platform.

- HTTP: the survey confirm page (`/s/{token}`), the leave-reason confirm page
  (`/r/{token}`), `POST /v1/surveys/answers` (write key), `GET /v1/surveys/stats` and
  `GET /v1/leave-reasons/stats` (admin key).
- A consumer of `contact.identified` and `order.completed` (what an alert tells support).
- The support alert worker, woken right after an answer that alerts commits, and polling
  every `RELANCE_FEEDBACK_DELIVERY_IDLE_S` for retries and other processes' alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI, Request

from relance_feedback.adapters.alert_file import FileAlertSender, RoutedSender, alert_file_under
from relance_feedback.adapters.postgres import PoolTransactor, PostgresFeedbackRepository
from relance_feedback.adapters.runtime import RuntimeInbox, RuntimeOutbox
from relance_feedback.adapters.webhook_http import HttpWebhookSender, webhook_client
from relance_feedback.http import ApiKeyKind, FeedbackDeps, build_router
from relance_feedback.services import AlertDelivery, AlertTarget, ContactsAndOrders, FeedbackService
from relance_feedback.settings import FeedbackSettings
from relance_runtime.auth import authenticate
from relance_runtime.platform import Platform
from relance_runtime.registry import ServiceName
from relance_runtime.service import Component

SERVICE: ServiceName = "feedback"


@dataclass(frozen=True, slots=True)
class FeedbackWiring:
    """Everything `build` assembles, before it becomes a component (tests use the parts)."""

    settings: FeedbackSettings
    service: FeedbackService
    delivery: AlertDelivery
    handler: ContactsAndOrders
    deps: FeedbackDeps
    alert_file: FileAlertSender
    client: httpx.AsyncClient | None


def wire(platform: Platform, settings: FeedbackSettings) -> FeedbackWiring:
    repository = PostgresFeedbackRepository()
    transactor = PoolTransactor(platform.pool)
    alert_file = FileAlertSender(alert_file_under(platform.settings.data_dir))
    client: httpx.AsyncClient | None = None
    webhook: HttpWebhookSender | None = None
    if settings.support_webhook_url:
        timeout_s = settings.support_webhook_timeout_s
        client = webhook_client(settings.allowlist(), timeout_s=timeout_s)
        webhook = HttpWebhookSender(client, timeout_s=timeout_s)
    delivery = AlertDelivery(
        repository,
        transactor,
        RoutedSender(alert_file, webhook),
        settings.secrets(),
        batch=settings.feedback_delivery_batch,
        timeout_s=settings.support_webhook_timeout_s,
        signing_clock=lambda: datetime.now(UTC),
    )
    target = AlertTarget(
        url=settings.support_webhook_url or alert_file.url,
        payload=settings.support_webhook_payload,
        public_url=platform.settings.public_url,
    )
    service = FeedbackService(
        repository, transactor, target, RuntimeOutbox(platform.outbox), delivery.wake
    )

    async def shop_of(request: Request, kind: ApiKeyKind) -> str:
        return await authenticate(platform.keys, kind, request.headers.get("authorization"))

    return FeedbackWiring(
        settings=settings,
        service=service,
        delivery=delivery,
        handler=ContactsAndOrders(service, transactor, RuntimeInbox(SERVICE)),
        deps=FeedbackDeps(service, platform.tokens, shop_of, platform.clock),
        alert_file=alert_file,
        client=client,
    )


def build(platform: Platform, settings: FeedbackSettings | None = None) -> Component:
    wiring = wire(platform, settings or FeedbackSettings())
    drain_s = platform.settings.drain_timeout_s

    async def deliver_alerts() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(
            wiring.delivery.run(
                platform.clock, stop, idle_s=wiring.settings.feedback_delivery_idle_s
            ),
            name="feedback:alerts",
        )
        try:
            await asyncio.shield(loop)
        except asyncio.CancelledError:
            # Stopping: let an in-flight pass record its attempts, within the drain time.
            # An attempt cut short stays leased and is retried once its lease ends.
            stop.set()
            await asyncio.wait({loop}, timeout=drain_s)
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            raise

    async def close_client() -> None:
        if wiring.client is not None:
            await wiring.client.aclose()

    return Component(
        SERVICE,
        routers=[build_router(wiring.deps)],
        consumers=platform.consumers_for(SERVICE, wiring.handler),
        background=[deliver_alerts],
        on_stop=[close_client],
    )


def configure_app(app: FastAPI) -> None:
    """Hook run when the app is created (ASGI middleware goes here); feedback needs none:
    its request bodies are bounded by the routes themselves."""
    del app
