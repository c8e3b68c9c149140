"""The whole system as OS processes, with the outside world it talks to on loopback.

`System` starts `relance serve <service>` processes (two instances each of segmentation,
orchestrator and sender), an SMTP server (aiosmtpd) that keeps every parsed message, a
Twilio-shaped SMS stub, a support-webhook receiver verifying Standard Webhooks signatures,
and a clock offset file every service reads (`RELANCE_CLOCK_OFFSET_FILE`). Also used by
`bench/e2e.py`.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import httpx
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook, WebhookVerificationError

REPO = Path(__file__).resolve().parents[3]
RELANCE = REPO / ".venv" / "bin" / "relance"
if not RELANCE.exists():
    RELANCE = Path(sys.executable).with_name("relance")
SHOP = "shop"
WRITE_KEY = "wk-e2e"
ADMIN_KEY = "ak-e2e"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-e2e-token"
DEFAULT_LAYOUT: Mapping[str, int] = {
    "ingest": 1,
    "segmentation": 2,
    "orchestrator": 2,
    "sender": 2,
    "feedback": 1,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- SMTP mailbox


@dataclass(frozen=True)
class Mail:
    received_at: float  # time.time() when the server accepted the final dot
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    @cached_property
    def message(self) -> EmailMessage:
        # Parsed when a test reads it, not before the 250: parsing with the default
        # policy takes milliseconds, which the load bench would count as send latency.
        message = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message

    @property
    def message_id(self) -> str:
        return str(self.message.get("Message-ID", "")).strip().strip("<>").split("@")[0]

    def body(self, subtype: str = "html") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content())  # type: ignore[attr-defined]

    def links(self) -> list[str]:
        text = self.body("html") + "\n" + self.body("plain")
        found = re.findall(r"""https?://[^\s"'<>)]+""", text)
        return list(dict.fromkeys(u.replace("&amp;", "&") for u in found))

    def unsubscribe_url(self) -> str | None:
        header = str(self.message.get("List-Unsubscribe", ""))
        match = re.search(r"<(https?://[^>]+)>", header)
        return match.group(1) if match else None


class _SmtpHandler:
    def __init__(self, box: Mailbox) -> None:
        self._box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        self._box.add(
            Mail(
                received_at=time.time(),
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(str(r) for r in envelope.rcpt_tos),
                raw=raw,
            )
        )
        return "250 Message accepted for delivery"


class Mailbox:
    """An SMTP server on loopback keeping every message it accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._mails: list[Mail] = []
        self._controller = Controller(
            _SmtpHandler(self), hostname="127.0.0.1", port=self.port, decode_data=False
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def add(self, mail: Mail) -> None:
        with self._lock:
            self._mails.append(mail)

    def all(self) -> list[Mail]:
        with self._lock:
            return list(self._mails)

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.all() if address in m.rcpt_tos]

    async def wait_for(
        self, address: str, count: int = 1, *, timeout_s: float = 30.0, where: Any = None
    ) -> list[Mail]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [m for m in self.to(address) if where is None or where(m)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} emails to {address} after {timeout_s}s; "
                    f"subjects: {[str(m.message['Subject']) for m in self.to(address)]}"
                )
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- HTTP stubs


class _Server:
    """A threaded HTTP server on loopback recording what it received."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None

    def body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, body: Mapping[str, Any] | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass(frozen=True)
class Sms:
    account_sid: str
    authorized: bool
    form: dict[str, str]


class _TwilioHandler(_Quiet):
    def do_POST(self) -> None:
        owner: SmsStub = self.server.owner  # type: ignore[attr-defined]
        match = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/Messages\.json", self.path)
        if match is None:
            self.reply(404, {"code": 20404, "message": "not found"})
            return
        expected = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        form = {k: v[0] for k, v in parse_qs(self.body().decode()).items()}
        sms = Sms(match.group(1), self.headers.get("authorization") == expected, form)
        with owner.lock:
            owner.messages.append(sms)
        if not sms.authorized:
            self.reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        sid = "SM" + uuid.uuid4().hex
        self.reply(
            201,
            {
                "sid": sid,
                "status": "queued",
                "to": form.get("To"),
                "from": form.get("From"),
                "body": form.get("Body"),
                "account_sid": match.group(1),
                "error_code": None,
            },
        )


class SmsStub(_Server):
    """`POST /2010-04-01/Accounts/{sid}/Messages.json` as Twilio answers it (201 + JSON)."""

    def __init__(self) -> None:
        self.messages: list[Sms] = []
        super().__init__(_TwilioHandler)


@dataclass(frozen=True)
class Alert:
    received_at: float
    headers: dict[str, str]
    raw: bytes
    verified: bool
    payload: dict[str, Any] | None


class _WebhookHandler(_Quiet):
    def do_POST(self) -> None:
        owner: WebhookReceiver = self.server.owner  # type: ignore[attr-defined]
        raw = self.body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        payload: dict[str, Any] | None
        try:
            payload = Webhook(owner.secret).verify(raw, headers)
            verified = True
        except WebhookVerificationError:
            payload, verified = None, False
        with owner.lock:
            owner.alerts.append(Alert(time.time(), headers, raw, verified, payload))
        self.reply(204 if verified else 400)


class WebhookReceiver(_Server):
    """The support tool: verifies Standard Webhooks signatures, logs every delivery."""

    def __init__(self) -> None:
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.alerts: list[Alert] = []
        super().__init__(_WebhookHandler)

    def log(self) -> list[Alert]:
        with self.lock:
            return list(self.alerts)


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    service: str
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class System:
    """Every service as its own process on one database, one topic prefix and one clock."""

    tmp: Path
    database_url: str
    kafka_bootstrap: str
    topic_prefix: str
    layout: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LAYOUT))
    extra_env: Mapping[str, str] = field(default_factory=dict)
    mailbox: Mailbox = field(default_factory=Mailbox)
    sms: SmsStub = field(default_factory=SmsStub)
    webhook: WebhookReceiver = field(default_factory=WebhookReceiver)
    procs: list[Proc] = field(default_factory=list)
    ingest_port: int = field(default_factory=free_port)
    _offset: timedelta = timedelta(0)
    _counter: int = 0

    # ---- layout

    @property
    def span_file(self) -> Path:
        return self.tmp / "spans.jsonl"

    @property
    def clock_file(self) -> Path:
        return self.tmp / "clock_offset"

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    def of(self, service: str) -> list[Proc]:
        return [p for p in self.procs if p.service == service and p.alive]

    @property
    def feedback_url(self) -> str:
        return self.of("feedback")[0].url

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
        env.update(
            RELANCE_BUS="kafka",
            RELANCE_KAFKA_BOOTSTRAP=self.kafka_bootstrap,
            RELANCE_DATABASE_URL=self.database_url,
            RELANCE_TOPIC_PREFIX=self.topic_prefix,
            RELANCE_WRITE_KEYS=f"{SHOP}:{WRITE_KEY}",
            RELANCE_ADMIN_KEYS=f"{SHOP}:{ADMIN_KEY}",
            RELANCE_PUBLIC_URL=self.ingest_url,
            RELANCE_TOKEN_KEYS="e2e:relance-e2e-token-key-0123456789",
            RELANCE_DATA_DIR=str(self.tmp / "var"),
            RELANCE_SMTP_URL=f"smtp://127.0.0.1:{self.mailbox.port}?starttls=false",
            RELANCE_SENDER_SMS_PROVIDER="twilio",
            RELANCE_SENDER_SMS_URL=self.sms.url,
            RELANCE_SENDER_SMS_ACCOUNT_SID=TWILIO_SID,
            RELANCE_SENDER_SMS_AUTH_TOKEN=TWILIO_TOKEN,
            RELANCE_SENDER_SMS_FROM="+33700000000",
            RELANCE_SENDER_RATE_LIMITS='{"email": 5000, "sms": 100, "twilio": 100}',
            RELANCE_SUPPORT_WEBHOOK_URL=f"{self.webhook.url}/support",
            RELANCE_SUPPORT_WEBHOOK_SECRET=self.webhook.secret,
            RELANCE_WEBHOOK_ALLOWLIST="127.0.0.1",
            RELANCE_FEEDBACK_DELIVERY_IDLE_S="0.5",
            RELANCE_OTEL_EXPORTER="file",
            RELANCE_OTEL_FILE=str(self.span_file),
            RELANCE_CLOCK_OFFSET_FILE=str(self.clock_file),
            RELANCE_LOG_FORMAT="json",
            RELANCE_DRAIN_TIMEOUT_S="5",
            RELANCE_DB_POOL_MAX="10",
            RELANCE_INGEST_RATE_PER_S="1000000",
            RELANCE_INGEST_RATE_BURST="1000000",
        )
        env.update(self.extra_env)
        return env

    # ---- lifecycle

    def start(self) -> None:
        (self.tmp / "logs").mkdir(parents=True, exist_ok=True)
        self.clock_file.write_text("0")
        self.span_file.touch()
        self.mailbox.start()
        self.sms.start()
        self.webhook.start()
        started = []
        for service, count in self.layout.items():
            for _ in range(count):
                started.append(self.spawn(service, wait=False))
        self.wait_ready(started)

    def spawn(
        self,
        service: str,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Proc:
        """Start one instance; `name` reuses an instance identity (e.g. a restarted sender)."""
        self._counter += 1
        name = name or f"{service}-{self._counter}"
        port = self.ingest_port if service == "ingest" else free_port()
        proc_env = self.base_env()
        proc_env["RELANCE_SENDER_INSTANCE"] = name
        proc_env.update(env or {})
        log_path = self.tmp / "logs" / f"{name}.{self._counter}.log"
        out = log_path.open("wb")
        popen = subprocess.Popen(
            [str(RELANCE), "serve", service, "--host", "127.0.0.1", "--port", str(port)],
            env=proc_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        out.close()
        proc = Proc(service, name, port, popen, log_path, proc_env)
        self.procs.append(proc)
        if wait:
            self.wait_ready([proc])
        return proc

    def wait_ready(self, procs: Sequence[Proc], timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(procs)
        with httpx.Client(timeout=3) as client:
            while pending:
                for proc in list(pending):
                    if not proc.alive:
                        raise AssertionError(
                            f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
                        )
                    try:
                        if client.get(f"{proc.url}/readyz").status_code == 200:
                            pending.remove(proc)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise AssertionError(
                        "not ready: " + ", ".join(f"{p.name}:\n{p.log_tail(1500)}" for p in pending)
                    )
                if pending:
                    time.sleep(0.25)

    def ready(self, proc: Proc) -> bool:
        try:
            return httpx.get(f"{proc.url}/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def readiness(self, proc: Proc) -> str:
        """What /readyz answers, for a failure message."""
        try:
            response = httpx.get(f"{proc.url}/readyz", timeout=3)
        except httpx.HTTPError as exc:
            return repr(exc)
        return f"{response.status_code} {response.text[:500]}"

    def kill(self, proc: Proc) -> None:
        """SIGKILL: no drain, no commit, no leaving the group."""
        if proc.alive:
            proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=30)

    def terminate(self, proc: Proc, timeout_s: float = 60.0) -> int:
        """SIGTERM: drain the in-flight batch, commit, leave the group."""
        if proc.alive:
            proc.popen.send_signal(signal.SIGTERM)
        try:
            return proc.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            return proc.popen.wait(timeout=30)

    def restart(self, proc: Proc, *, env: Mapping[str, str] | None = None) -> Proc:
        """A new process with the same identity (sender instance name) and port."""
        if proc.alive:
            self.kill(proc)
        self.procs.remove(proc)
        return self.spawn(proc.service, name=proc.name, env=env)

    def stop(self) -> dict[str, int]:
        """SIGTERM every live process (in parallel), then the stubs; returns exit codes."""
        live = [p for p in self.procs if p.alive]
        for proc in live:
            proc.popen.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        for proc in live:
            try:
                codes[proc.name] = proc.popen.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                codes[proc.name] = proc.popen.wait(timeout=30)
        for stub in (self.mailbox, self.sms, self.webhook):
            try:
                stub.stop()
            except Exception:
                pass
        return codes

    # ---- clock

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        """Move every service's clock forward by `delta` (services re-read within 1 s)."""
        self._offset += delta
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(str(self._offset.total_seconds()))
        tmp.replace(self.clock_file)
        time.sleep(1.3)

    # ---- spans

    def spans(self) -> list[dict[str, Any]]:
        lines = self.span_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    # ---- database

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.db()
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await self.db()
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def wait_until(
        self, sql: str, *args: Any, expect: Any, timeout_s: float = 60.0, what: str = ""
    ) -> Any:
        """Poll a scalar query until it equals `expect` (or `expect(value)` is true)."""
        deadline = time.monotonic() + timeout_s
        conn = await self.db()
        try:
            while True:
                value = await conn.fetchval(sql, *args)
                ok = expect(value) if callable(expect) else value == expect
                if ok:
                    return value
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what or sql}: {value!r} after {timeout_s}s")
                await asyncio.sleep(0.25)
        finally:
            await conn.close()

    async def wait_drained(self, services: Sequence[str], *, timeout_s: float = 120.0) -> None:
        """Wait until each service's consumer groups have committed up to the end of every
        partition they read: every record consumed, including those a service skips
        unread (views no plan or aggregate reads leave no inbox row)."""
        from relance_runtime.bus.messages import TopicNames
        from relance_runtime.ops.status import kafka_lag
        from relance_runtime.registry import SUBSCRIPTIONS

        subscriptions = {s: SUBSCRIPTIONS[s] for s in services}  # type: ignore[index]
        deadline = time.monotonic() + timeout_s
        while True:
            lags = await kafka_lag(
                self.kafka_bootstrap, TopicNames(self.topic_prefix), subscriptions
            )
            behind = {f"{x.group}:{x.topic}/{x.partition}": x.lag for x in lags if x.lag}
            if lags and not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"consumers not drained after {timeout_s}s: {behind}")
            await asyncio.sleep(1.0)

    async def wait_mail(
        self, address: str, count: int = 1, *, timeout_s: float = 60.0, where: Any = None
    ) -> list[Mail]:
        """`mailbox.wait_for`, explaining a timeout with the sender's ledger rows."""
        try:
            return await self.mailbox.wait_for(address, count, timeout_s=timeout_s, where=where)
        except AssertionError as exc:
            rows = await self.fetch(
                "SELECT plan, step, state, last_error FROM sender_ledger WHERE address = $1"
                " OR strpos(request::text, $1) > 0",
                address,
            )
            raise AssertionError(f"{exc}; ledger: {[dict(r) for r in rows]}") from None

    # ---- HTTP

    def survey_url(self, url: str) -> str:
        """Survey links point at RELANCE_PUBLIC_URL (ingest); `/s/` is served by feedback."""
        parts = urlsplit(url)
        feedback = urlsplit(self.feedback_url)
        return urlunsplit(parts._replace(netloc=feedback.netloc))

    def admin_auth(self) -> tuple[str, str]:
        return (ADMIN_KEY, "")

    def write_auth(self) -> tuple[str, str]:
        return (WRITE_KEY, "")


# --------------------------------------------------------------------------- events


def track(user_id: str, event: str, properties: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user_id,
        "event": event,
        "properties": dict(properties),
        "timestamp": at.isoformat(),
        "messageId": f"m-{uuid.uuid4().hex}",
    }


def identify(user_id: str, traits: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user_id,
        "traits": dict(traits),
        "timestamp": at.isoformat(),
        "messageId": f"m-{uuid.uuid4().hex}",
    }


def order(user_id: str, order_id: str, total: float, at: datetime) -> dict[str, Any]:
    return track(
        user_id,
        "Order Completed",
        {
            "order_id": order_id,
            "total": total,
            "currency": "EUR",
            "products": [
                {"product_id": "p-1", "name": "Tea", "price": total, "quantity": 1},
            ],
        },
        at,
    )


def event_ids(messages: Iterable[Mapping[str, Any]]) -> dict[str, list[uuid.UUID]]:
    """The envelope ids ingest derives for each Segment message (deterministic)."""
    from relance_events.segment_spec import segment_to_events

    found: dict[str, list[uuid.UUID]] = {}
    for message in messages:
        events = segment_to_events(
            dict(message),
            shop_id=SHOP,
            received_at=datetime.now(UTC),
            max_age=None,
            max_ahead=None,
        )
        found[str(message["messageId"])] = [e.event_id for e in events]
    return found


async def post_batch(
    client: httpx.AsyncClient, base_url: str, batch: Sequence[Mapping[str, Any]]
) -> httpx.Response:
    return await client.post(
        f"{base_url}/v1/batch", json={"batch": list(batch)}, auth=(WRITE_KEY, "")
    )
