"""A scriptable webhook receiver on loopback, and builders over the shared `pool` fixture
(a fresh database with every migration applied, from tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from relance_events import Event, decode, new_event
from relance_events.payloads import ContactIdentified, ContactTraits, LineItem, OrderCompleted
from relance_feedback.adapters.alert_file import FileAlertSender, RoutedSender
from relance_feedback.adapters.postgres import PoolTransactor, PostgresFeedbackRepository
from relance_feedback.adapters.runtime import RuntimeOutbox
from relance_feedback.adapters.webhook_http import HttpWebhookSender, webhook_client
from relance_feedback.domain.addresses import Allowlist
from relance_feedback.domain.alerts import PayloadMode
from relance_feedback.domain.delivery import DeliveryPolicy
from relance_feedback.domain.signing import WebhookSecret
from relance_feedback.services import AlertDelivery, AlertTarget, FeedbackService
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.outbox import TableOutbox


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float = field(default_factory=time.perf_counter)


@dataclass
class Receiver:
    """An HTTP/1.1 server that answers a scripted sequence of replies.

    Each reply is `(status, headers)` or the string "hang" (never answers). After the
    script runs out, every request gets 200. Signatures are checked with `standardwebhooks`.
    """

    secret: str
    script: list[Any] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    server: asyncio.base_events.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/support"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except (WebhookVerificationError, ValueError):
                verified = False
            self.received.append(Received(method, path, headers, body, verified))
            reply = self.script.pop(0) if self.script else (200, {})
            if reply == "hang":
                await asyncio.sleep(3600)
                return
            status, extra = reply
            extra_lines = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            payload = b"secret internal detail"
            writer.write(
                (
                    f"HTTP/1.1 {status} X\r\ncontent-length: {len(payload)}\r\n"
                    f"connection: close\r\n{extra_lines}\r\n"
                ).encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start(self, host: str = "127.0.0.1") -> None:
        self.server = await asyncio.start_server(self._handle, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await self.server.wait_closed()


WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_WEBHOOK_SECRET = "whsec_b2xkLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM="


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver(WEBHOOK_SECRET)
    await rx.start()
    try:
        yield rx
    finally:
        await rx.stop()


SHORT_POLICY = DeliveryPolicy(
    schedule=(timedelta(0), timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=3),
              timedelta(seconds=4)),
    jitter=0.1,
)  # fmt: skip


def build(
    pool: asyncpg.Pool,
    url: str | None,
    secrets: tuple[str, ...],
    *,
    policy: DeliveryPolicy = SHORT_POLICY,
    payload: PayloadMode = "full",
    allowlist: str = "127.0.0.1",
    timeout_s: float = 2.0,
    alert_file: Path | None = None,
) -> tuple[FeedbackService, AlertDelivery]:
    """Service and worker on `pool`; events go to the real `runtime_outbox` table (the
    platform outbox of the Kafka mode), alerts to `url` or, without one, to `alert_file`."""
    repo = PostgresFeedbackRepository()
    tx = PoolTransactor(pool)
    client = webhook_client(Allowlist.parse(allowlist), timeout_s=timeout_s)
    file = FileAlertSender(alert_file or Path("/nonexistent/support_alerts.jsonl"))
    worker = AlertDelivery(
        repo,
        tx,
        RoutedSender(file, HttpWebhookSender(client, timeout_s=timeout_s)),
        tuple(WebhookSecret.parse(s) for s in secrets),
        policy,
        timeout_s=timeout_s,
    )
    outbox = RuntimeOutbox(TableOutbox(lambda event: to_message(event, TopicNames())))
    target = AlertTarget(url or file.url, payload, "https://relance.example")
    service = FeedbackService(repo, tx, target, outbox, worker.wake)
    return service, worker


async def staged_events(pool: asyncpg.Pool) -> list[Event[Any]]:
    """The events waiting in the platform outbox, oldest first."""
    rows = await pool.fetch("SELECT value FROM runtime_outbox ORDER BY id")
    return [decode(bytes(row["value"])) for row in rows]


async def seed_contact_and_order(
    service: FeedbackService, pool: asyncpg.Pool, shop: str, user: str, order: str, at: datetime
) -> None:
    identified = new_event(
        ContactIdentified(
            user_id=user,
            traits=ContactTraits(
                first_name="Ada", last_name="Lovelace", email="ada@example.com",
                phone="+33612345678",
            ),
        ),
        shop_id=shop, contact_key=user, source="test", occurred_at=at,
    )  # fmt: skip
    completed = new_event(
        OrderCompleted(
            order_id=order,
            total=Decimal("59.90"),
            items=[LineItem(product_id="p1", name="Teapot", price=Decimal("59.90"))],
        ),
        shop_id=shop, contact_key=user, source="test", occurred_at=at,
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await service.on_contact_identified(conn, identified)
        await service.on_order_completed(conn, completed)


@pytest.fixture
def fb() -> SimpleNamespace:
    """The builders and constants the feedback integration tests share."""
    return SimpleNamespace(
        build=build,
        seed=seed_contact_and_order,
        staged=staged_events,
        SECRET=WEBHOOK_SECRET,
        OLD_SECRET=OLD_WEBHOOK_SECRET,
        Receiver=Receiver,
    )
