"""Benchmark segmentation on PostgreSQL: full RFM + stage + tier recompute, per-event latency.

Generates N contacts with about 5 orders each (COPY), then measures:
  - the first full recompute (every profile written, every change recorded),
  - a steady-state recompute one day later (only what changed is written),
  - `apply_event` latency (one order per transaction, commit included) for random contacts.
Prints the figures and writes them as JSON to bench/results/rfm.json.

    uv run --frozen python bench/rfm.py --contacts 1000000
    uv run --frozen python bench/rfm.py --contacts 50000 --events 500   # quick

Without --dsn a throwaway PostgreSQL is started with pgserver. Goals: full recompute
<= 5 s for 1M contacts / 5M orders; per-event p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from relance_events.event import new_event
from relance_events.payloads import OrderCompleted
from relance_segmentation.adapters.postgres import SegmentationRepository, migration_files
from relance_segmentation.domain.lifecycle import LifecycleConfig

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SHOP = "bench"


def ledger(contacts: int, orders_per_contact: float, seed: int) -> Iterator[tuple[Any, ...]]:
    """Yields ('o', order row) and ('c', contact row) tuples, one contact at a time."""
    rnd = random.Random(seed)
    p = 1.0 / orders_per_contact
    order_no = 0
    for c in range(contacts):
        n = 1
        while rnd.random() > p:
            n += 1
        key = f"c{c}"
        gross = Decimal(0)
        first = last = None
        last_total = Decimal(0)
        for _ in range(n):
            at = NOW - timedelta(minutes=rnd.randrange(0, 2 * 365 * 24 * 60))
            total = Decimal(rnd.randrange(500, 30000)) / 100
            order_no += 1
            yield ("o", (SHOP, f"o{order_no}", key, at, total))
            gross += total
            first = at if first is None or at < first else first
            if last is None or at > last:
                last, last_total = at, total
        yield ("c", (SHOP, key, n, gross, Decimal(0), first, last, last_total, NOW))


async def load(conn: asyncpg.Connection, contacts: int, seed: int) -> tuple[int, float]:
    started = time.perf_counter()
    orders: list[tuple[Any, ...]] = []
    people: list[tuple[Any, ...]] = []
    total_orders = 0

    async def flush() -> None:
        await conn.copy_records_to_table(
            "segmentation_orders",
            records=orders,
            columns=["shop_id", "order_id", "contact_key", "ordered_at", "total"],
        )
        await conn.copy_records_to_table(
            "segmentation_contacts",
            records=people,
            columns=[
                "shop_id",
                "contact_key",
                "orders_count",
                "gross",
                "refunded",
                "first_order_at",
                "last_order_at",
                "last_order_total",
                "updated_at",
            ],
        )
        orders.clear()
        people.clear()

    for kind, row in ledger(contacts, 5.0, seed):
        if kind == "o":
            orders.append(row)
            total_orders += 1
        else:
            people.append(row)
        if len(orders) >= 200_000:
            await flush()
    await flush()
    await conn.execute("analyze")
    return total_orders, time.perf_counter() - started


async def run(dsn: str, contacts: int, events: int, seed: int) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'create database "{name}"')
    base, _, query = dsn.partition("?")
    conn = await asyncpg.connect(
        base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    )
    try:
        for path in migration_files():
            await conn.execute(path.read_text())
        orders, load_s = await load(conn, contacts, seed)
        print(f"loaded {contacts:,} contacts / {orders:,} orders in {load_s:.1f} s")
        repo = SegmentationRepository(LifecycleConfig(), basket_window_days=365)

        t = time.perf_counter()
        async with conn.transaction():
            first = await repo.recompute(conn, SHOP, NOW)
        first_s = time.perf_counter() - t
        print(
            f"first full recompute: {first_s:.2f} s ({first.profiles_written:,} profiles, "
            f"{first.changes_recorded:,} changes)"
        )

        t = time.perf_counter()
        async with conn.transaction():
            steady = await repo.recompute(conn, SHOP, NOW + timedelta(days=1))
        steady_s = time.perf_counter() - t
        print(
            f"next-day full recompute: {steady_s:.2f} s ({steady.profiles_written:,} profiles, "
            f"{steady.changes_recorded:,} changes)"
        )

        rnd = random.Random(seed + 1)
        latencies: list[float] = []
        at = NOW + timedelta(days=1, hours=1)
        for i in range(events):
            event = new_event(
                OrderCompleted(order_id=f"live{i}", total=Decimal(rnd.randrange(500, 30000)) / 100),
                shop_id=SHOP,
                contact_key=f"c{rnd.randrange(contacts)}",
                source="bench",
                occurred_at=at,
            )
            t = time.perf_counter()
            async with conn.transaction():
                await repo.apply_event(conn, event, at)
            latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"per-event update: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {events:,} orders")
        return {
            "contacts": contacts,
            "orders": orders,
            "load_s": round(load_s, 2),
            "first_recompute_s": round(first_s, 3),
            "first_recompute_profiles_written": first.profiles_written,
            "first_recompute_changes": first.changes_recorded,
            "steady_recompute_s": round(steady_s, 3),
            "steady_recompute_profiles_written": steady.profiles_written,
            "steady_recompute_changes": steady.changes_recorded,
            "event_count": events,
            "event_p50_ms": round(p50, 3),
            "event_p99_ms": round(p99, 3),
            "goals": {"full_recompute_s": 5.0, "event_p99_ms": 5.0},
        }
    finally:
        await conn.close()
        await admin.execute(f'drop database "{name}"')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000, help="contacts to generate")
    parser.add_argument("--events", type=int, default=2000, help="live orders to time")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dsn", help="an existing PostgreSQL (default: start one with pgserver)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rfm.json")
    args = parser.parse_args()
    if args.dsn:
        figures = asyncio.run(run(args.dsn, args.contacts, args.events, args.seed))
    else:
        import pgserver

        with tempfile.TemporaryDirectory() as tmp:
            srv = pgserver.get_server(Path(tmp), cleanup_mode="stop")
            try:
                figures = asyncio.run(run(srv.get_uri(), args.contacts, args.events, args.seed))
            finally:
                srv.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
