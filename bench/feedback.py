"""Feedback bench: latency from the survey answer POST to the support alert leaving.

Runs the feedback component exactly as `relance up` wires it (`bootstrap.build`) on a
started platform: a real PostgreSQL (pgserver), the PostgreSQL-log bus, the platform outbox
and inbox, the contact/order consumer and the alert worker as background tasks. Each
customer's `contact.identified` and `order.completed` are published on the bus first (so
alerts carry name, email, phone and order); then `--answers` not-satisfied answers are POSTed
to `/s/{token}` (`--concurrency` at a time) through the ASGI app, and a webhook receiver on
loopback (allow-listed) records when each signed alert arrives. Latency per answer: POST
start -> alert received. Goal: p99 < 2 s. Prints a summary, writes bench/results/feedback.json.

    uv run --frozen python bench/feedback.py --answers 300 --concurrency 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pgserver
from fastapi import FastAPI

from relance_events import Event, new_event
from relance_events.payloads import ContactIdentified, ContactTraits, LineItem, OrderCompleted
from relance_feedback.bootstrap import build
from relance_feedback.settings import FeedbackSettings
from relance_runtime.auth import install_auth_handler
from relance_runtime.platform import start_platform
from relance_runtime.settings import CommonSettings

RESULTS = Path(__file__).resolve().parent / "results" / "feedback.json"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SHOP = "shop-bench"
GOAL_P99_S = 2.0


class Receiver:
    """Records when each alert (by order id) first arrived, and whether it was complete."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.with_contact = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])
                    if k
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                data = json.loads(body)["data"]
                order = data["order"]["id"]
                if order not in self.arrived:
                    self.arrived[order] = time.perf_counter()
                    self.with_contact += bool(data["contact"]["email"])
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        writer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def run(answers: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relance-bench-") as tmp:
        server = pgserver.get_server(str(Path(tmp) / "pg"), cleanup_mode="stop")
        try:
            return await _bench(server.get_uri(), Path(tmp), answers, concurrency)
        finally:
            server.cleanup()


def customer_events(i: int) -> list[Event[Any]]:
    at = datetime.now(UTC)
    user = f"u-{i}"
    return [
        new_event(
            ContactIdentified(
                user_id=user,
                traits=ContactTraits(first_name="Ada", last_name=f"N{i}",
                                     email=f"{user}@example.com", phone="+33612345678"),
            ),
            shop_id=SHOP, contact_key=user, source="bench", occurred_at=at,
        ),
        new_event(
            OrderCompleted(
                order_id=f"o-{i}", total=Decimal("59.90"),
                items=[LineItem(product_id="p1", name="Teapot", price=Decimal("59.90"))],
            ),
            shop_id=SHOP, contact_key=user, source="bench", occurred_at=at,
        ),
    ]  # fmt: skip


async def _bench(root_dsn: str, tmp: Path, answers: int, concurrency: int) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(root_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(root_dsn)._replace(path=f"/{name}"))
    receiver = Receiver()
    rx_server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = rx_server.sockets[0].getsockname()[1]
    common = CommonSettings(
        database_url=dsn, bus="postgres", data_dir=tmp / "var", admin_keys=f"{SHOP}:ak-bench"
    )
    platform = await start_platform(common, client_id="relance-bench")
    settings = FeedbackSettings(
        support_webhook_url=f"http://127.0.0.1:{receiver.port}/support",
        support_webhook_secret=SECRET,
        webhook_allowlist="127.0.0.1",
        feedback_delivery_batch=50,
    )
    component = build(platform, settings)
    await component.start()
    try:
        seeded = time.perf_counter()
        for i in range(answers):
            await platform.bus.publish(customer_events(i))
        while await platform.pool.fetchval("SELECT count(*) FROM feedback_orders") < answers:
            await asyncio.sleep(0.02)
        seeded = time.perf_counter() - seeded

        app = FastAPI()
        install_auth_handler(app)
        for router in component.routers():
            app.include_router(router)
        started: dict[str, float] = {}
        gate = asyncio.Semaphore(concurrency)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

            async def answer(i: int) -> None:
                order = f"o-{i}"
                token = platform.tokens.mint(
                    "survey",
                    {"s": SHOP, "c": f"u-{i}", "m": f"m-{i}", "o": order, "a": "not_satisfied"},
                )
                async with gate:
                    started[order] = time.perf_counter()
                    response = await http.post(f"/s/{token}", data={"comment": "late"})
                    response.raise_for_status()

            wall = time.perf_counter()
            await asyncio.gather(*(answer(i) for i in range(answers)))
            deadline = time.perf_counter() + 30
            while len(receiver.arrived) < answers and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
            wall = time.perf_counter() - wall
            events = await platform.pool.fetchval(
                "SELECT count(*) FROM bus_log WHERE $1 = ANY(header_values)",
                b"survey.answered",
            )
        latencies = [receiver.arrived[o] - started[o] for o in started if o in receiver.arrived]
        p99 = percentile(latencies, 99) if latencies else float("inf")
        return {
            "bench": "feedback answer POST -> support alert received (wired component)",
            "path": "bootstrap.build on start_platform (postgres log bus), ASGI, loopback hook",
            "answers": answers,
            "concurrency": concurrency,
            "delivered": len(latencies),
            "alerts_with_contact": receiver.with_contact,
            "survey_answered_events": int(events),
            "seed_contacts_orders_s": round(seeded, 3),
            "p50_s": round(percentile(latencies, 50), 4) if latencies else None,
            "p95_s": round(percentile(latencies, 95), 4) if latencies else None,
            "p99_s": round(p99, 4),
            "max_s": round(max(latencies), 4) if latencies else None,
            "mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
            "wall_s": round(wall, 3),
            "goal_p99_s": GOAL_P99_S,
            "goal_met": len(latencies) == answers and p99 < GOAL_P99_S,
        }
    finally:
        await component.stop()
        await platform.stop()
        rx_server.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(run(args.answers, args.concurrency))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if result["goal_met"] else 1)


if __name__ == "__main__":
    main()
