"""Real PostgreSQL (pgserver), a scriptable SMTP server (aiosmtpd) and a Twilio-shaped HTTP
server, all on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from relance_events import Event, decode, new_event
from relance_events.payloads import MessageRequested

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sender_pool(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The shared per-test database (every migration applied, the sender's included)."""
    return pool


def birthday_request(
    message_id: str, *, purpose: str = "marketing", email: str = "ok@example.org"
) -> Event[MessageRequested]:
    return new_event(
        MessageRequested(
            message_id=message_id,
            plan="birthday",
            step="wishes",
            plan_instance=f"pi-{message_id}",
            channel="email",
            purpose=purpose,
            locale="fr",
            context={
                "contact": {"email": email, "first_name": "Léa"},
                "coupon": {"code": "LEA10", "discount": "10 %", "expires_at": "2025-03-31"},
            },
        ),
        shop_id="shop",
        contact_key=f"u-{message_id}",
        source="orchestrator",
        occurred_at=datetime.now(UTC),
    )


async def ledger_state(pool: asyncpg.Pool, message_id: str) -> str | None:
    state: str | None = await pool.fetchval(
        "SELECT state FROM sender_ledger WHERE message_id = $1", message_id
    )
    return state


async def logged_events(pool: asyncpg.Pool, prefix: str, event_type: str) -> list[Event[Any]]:
    """Events of a type appended to the PostgreSQL log under a topic prefix."""
    rows = await pool.fetch(
        "SELECT value FROM bus_log WHERE starts_with(topic, $1) ORDER BY appended_at", prefix
    )
    events = [decode(bytes(r["value"])) for r in rows]
    return [e for e in events if e.type == event_type]


@dataclass
class ScriptedSmtpHandler:
    """Answers by recipient local part: ok, nouser (550 5.1.1 at RCPT), busy (421 at DATA),
    later (451 at DATA), slow (250 after a delay), reset (connection dropped after DATA)."""

    slow_s: float = 1.5
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("nouser@"):
            return "550 5.1.1 <nouser@example.org>: Recipient address rejected: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0]
        if rcpt.startswith("busy@"):
            return "421 4.7.28 Our system has detected an unusual rate"
        if rcpt.startswith("later@"):
            return "451 4.3.0 Temporary failure, try again later"
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        if rcpt.startswith("slow@"):
            await asyncio.sleep(self.slow_s)
        if rcpt.startswith("reset@"):
            server.transport.abort()
        return "250 2.0.0 Ok: queued as Q" + uuid.uuid4().hex[:8].upper()


@pytest.fixture
def smtp_server() -> Iterator[tuple[ScriptedSmtpHandler, int]]:
    handler = ScriptedSmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@dataclass
class TwilioFake:
    """Speaks the Twilio Messages.json create call; scripted by the `To` number."""

    account_sid: str = "AC123"
    auth_token: str = "secret-token"
    requests: list[dict[str, str]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def twilio() -> Iterator[TwilioFake]:
    fake = TwilioFake()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode()
            form = {k: v[-1] for k, v in parse_qs(raw).items()}
            expected_path = f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
            auth = self.headers.get("Authorization", "")
            fake.auth_headers.append(auth)
            good = (
                "Basic "
                + base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
            )
            if self.path != expected_path or auth != good:
                self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
                return
            if "application/x-www-form-urlencoded" not in self.headers.get("Content-Type", ""):
                self._reply(400, {"code": 0, "message": "not form encoded", "status": 400})
                return
            fake.requests.append(form)
            to = form.get("To", "")
            if to.endswith("02"):
                self._reply(400, {"code": 21610, "message": "unsubscribed", "status": 400})
            elif to.endswith("03"):
                self._reply(429, {"code": 20429, "message": "Too Many Requests", "status": 429})
            elif to.endswith("04"):
                time.sleep(1.0)
                self._reply(201, {"sid": "SMlate", "status": "queued"})
            else:
                self._reply(201, {"sid": f"SM{len(fake.requests):032d}", "status": "queued"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
