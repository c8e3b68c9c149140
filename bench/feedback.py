"""Feedback bench: latency from the survey answer POST to the support alert leaving.

Runs a real PostgreSQL (pgserver), the feedback router in-process (ASGI), the delivery
worker loop, and a webhook receiver on loopback; posts `--answers` not-satisfied answers
(`--concurrency` at a time) and measures, per answer, POST start -> the receiver having
the signed alert. Goal: p99 < 2 s. Prints a summary and writes bench/results/feedback.json.

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
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pgserver
from fastapi import FastAPI, Request

from relance_feedback.adapters.postgres import PoolTransactor, PostgresFeedbackRepository
from relance_feedback.adapters.webhook_http import HttpWebhookSender, webhook_client
from relance_feedback.domain.addresses import Allowlist
from relance_feedback.domain.signing import WebhookSecret
from relance_feedback.http import FeedbackDeps, build_router
from relance_feedback.services import AlertDelivery, AlertTarget, FeedbackService
from relance_runtime.clock import SystemClock
from relance_runtime.tokens import TokenSigner

MIGRATIONS = Path(__file__).resolve().parents[1] / (
    "services/feedback/src/relance_feedback/migrations"
)
RESULTS = Path(__file__).resolve().parent / "results" / "feedback.json"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GOAL_P99_S = 2.0


class Receiver:
    """Records when each webhook id first arrived; answers 200."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
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
                self.arrived.setdefault(data["order"]["id"], time.perf_counter())
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        writer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def run(answers: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relance-bench-pg-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            return await _bench(server.get_uri(), answers, concurrency)
        finally:
            server.cleanup()


async def _bench(dsn: str, answers: int, concurrency: int) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    pool = await asyncpg.create_pool(dsn, database=name, min_size=2, max_size=10)
    receiver = Receiver()
    rx_server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = rx_server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    try:
        async with pool.acquire() as conn:
            for migration in sorted(MIGRATIONS.glob("*.sql")):
                await conn.execute(migration.read_text())
        repo, tx = PostgresFeedbackRepository(), PoolTransactor(pool)
        client = webhook_client(Allowlist.parse("127.0.0.1"), timeout_s=15.0)
        worker = AlertDelivery(
            repo, tx, HttpWebhookSender(client), (WebhookSecret.parse(SECRET),), batch=50
        )
        url = f"http://127.0.0.1:{receiver.port}/support"
        service = FeedbackService(repo, tx, AlertTarget(url, "full"), None, worker.wake)
        signer = TokenSigner({"k1": b"bench-secret-0123456789"}, "k1")

        def authenticate(request: Request, kind: str) -> str:
            return "shop-bench"

        app = FastAPI()
        app.include_router(build_router(FeedbackDeps(service, signer, authenticate, SystemClock())))
        worker_task = asyncio.create_task(worker.run(SystemClock(), stop, idle_s=1.0))
        started: dict[str, float] = {}
        gate = asyncio.Semaphore(concurrency)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

            async def answer(i: int) -> None:
                order = f"o-{i}"
                token = signer.mint(
                    "survey",
                    {"s": "shop-bench", "c": f"u-{i}", "m": f"m-{i}", "o": order,
                     "a": "not_satisfied"},
                )  # fmt: skip
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
        stop.set()
        await worker_task
        await client.aclose()
        latencies = [receiver.arrived[o] - started[o] for o in started if o in receiver.arrived]
        p99 = percentile(latencies, 99) if latencies else float("inf")
        return {
            "bench": "feedback answer POST -> support alert received",
            "answers": answers,
            "concurrency": concurrency,
            "delivered": len(latencies),
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
        stop.set()
        rx_server.close()
        await pool.close()
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
