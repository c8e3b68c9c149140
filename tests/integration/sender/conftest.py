"""Real PostgreSQL (pgserver), a scriptable SMTP server (aiosmtpd) and a Twilio-shaped HTTP
server, all on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pgserver
import pytest
from aiosmtpd.controller import Controller

MIGRATIONS = Path(__file__).resolve().parents[3] / "services/sender/src/relance_sender/migrations"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="relance-sender-pg-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


@pytest.fixture
async def sender_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A fresh database with the sender migrations applied, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = urlunsplit(urlsplit(pg_dsn)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(dsn)
    for migration in sorted(MIGRATIONS.glob("*.sql")):
        async with conn.transaction():
            await conn.execute(migration.read_text())
    await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


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
