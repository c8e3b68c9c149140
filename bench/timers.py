"""Durable-timer benchmark: 1M pending timers in PostgreSQL, fired by concurrent workers
through the orchestrator's real timer adapter (`claim_due` with FOR UPDATE SKIP LOCKED,
`delete`, and an outbox write in the same transaction, one transaction per batch).

Phase 1 (throughput): every timer already due; workers drain them; timers fired/s.
Phase 2 (lateness): timers fall due at a steady rate (default 20,000/s); lateness =
commit time of the firing transaction - due time; p50 / p99.

    uv run --frozen python bench/timers.py [--timers 1000000] [--dsn DSN]

Without --dsn an embedded PostgreSQL (pgserver) is started in a temp directory.
Goals: >= 20,000 fired/s, lateness p99 < 250 ms. Prints and writes bench/results/timers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from relance_orchestrator.adapters.postgres_timers import PostgresTimerStore

ROOT = Path(__file__).resolve().parent
MIGRATIONS = ROOT.parent / "services/orchestrator/src/relance_orchestrator/migrations"


async def _load(conn: asyncpg.Connection, n: int, start: datetime, rate: float | None) -> None:
    def rows():  # type: ignore[no-untyped-def]
        for i in range(n):
            due = start if rate is None else start + timedelta(seconds=i / rate)
            yield ("shop", f"c{i}", "plan/contact", due)

    await conn.execute("TRUNCATE orchestrator_timers, bench_outbox")
    await conn.copy_records_to_table(
        "orchestrator_timers",
        records=rows(),
        columns=["shop_id", "contact_key", "timer_key", "due_at"],
    )
    await conn.execute("ANALYZE orchestrator_timers")


async def _worker(
    pool: asyncpg.Pool, store: PostgresTimerStore, batch: int, stop_at: int, lateness: list[float]
) -> int:
    fired = 0
    async with pool.acquire() as conn:
        while True:
            now = datetime.now(UTC)
            async with conn.transaction():
                due = await store.claim_due(conn, now, batch)
                if due:
                    await store.delete(conn, due)
                    await conn.copy_records_to_table(
                        "bench_outbox",
                        records=[(t.contact_key, t.key, t.due_at) for t in due],
                    )
            committed = datetime.now(UTC)
            if due:
                fired += len(due)
                lateness.extend((committed - t.due_at).total_seconds() * 1000 for t in due)
                continue
            remaining = await conn.fetchval("SELECT count(*) FROM orchestrator_timers")
            if remaining == 0 or fired >= stop_at:
                return fired
            await asyncio.sleep(0.002)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def run(dsn: str, n: int, workers: int, batch: int, rate: float) -> dict[str, object]:
    pool = await asyncpg.create_pool(dsn, min_size=workers + 1, max_size=workers + 1)
    async with pool.acquire() as conn:
        if await conn.fetchval("SELECT to_regclass('orchestrator_timers')") is None:
            for migration in sorted(MIGRATIONS.glob("*.sql")):
                await conn.execute(migration.read_text())
        await conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS bench_outbox "
            "(contact_key text, timer_key text, due_at timestamptz)"
        )
        await _load(conn, n, datetime.now(UTC) - timedelta(seconds=1), None)
    store = PostgresTimerStore()

    lat1: list[float] = []
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(_worker(pool, store, batch, n, lat1) for _ in range(workers)))
    elapsed = time.perf_counter() - t0
    throughput = sum(counts) / elapsed

    steady = min(n, int(rate * 15))
    async with pool.acquire() as conn:
        await _load(conn, steady, datetime.now(UTC) + timedelta(seconds=2), rate)
    lat2: list[float] = []
    await asyncio.gather(*(_worker(pool, store, batch, steady, lat2) for _ in range(workers)))
    await pool.close()
    result: dict[str, object] = {
        "timers": n,
        "workers": workers,
        "batch": batch,
        "fired_per_s": round(throughput, 1),
        "drain_seconds": round(elapsed, 2),
        "steady_rate_per_s": rate,
        "steady_timers": steady,
        "lateness_ms_p50": round(_pct(lat2, 0.50), 1),
        "lateness_ms_p99": round(_pct(lat2, 0.99), 1),
        "lateness_ms_mean": round(statistics.fmean(lat2), 1) if lat2 else 0.0,
        "goals": {"fired_per_s": 20000, "lateness_ms_p99": 250},
    }
    result["goals_met"] = throughput >= 20000 and float(result["lateness_ms_p99"]) < 250  # type: ignore[arg-type]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20000.0)
    parser.add_argument("--dsn", default=None)
    args = parser.parse_args()
    if args.dsn is None:
        import pgserver

        tmp = tempfile.mkdtemp(prefix="relance-bench-timers-")
        server = pgserver.get_server(tmp, cleanup_mode="delete")
        dsn = server.get_uri()
    else:
        dsn = args.dsn
    result = asyncio.run(run(dsn, args.timers, args.workers, args.batch, args.rate))
    text = json.dumps(result, indent=2)
    print(text)
    out = ROOT / "results" / "timers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
