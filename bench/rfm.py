"""Benchmark segmentation on PostgreSQL: full RFM + stage + tier recompute, per-event latency.

Generates N contacts with about 5 orders each (COPY), then measures:
  - the first full recompute (every profile written, every change staged; the 3 changes per
    contact of this bulk-loaded start are counted, not turned into events),
  - a steady-state recompute one day later (only what changed is written), including its
    change events appended to the PostgreSQL log through the outbox,
  - after a CHECKPOINT (the load's dirty pages flushed first), per-event latency for random
    contacts, one order per transaction, commit included, the variants interleaved so they
    share the machine's conditions: a one-row update (the commit floor), `apply_event`
    alone, and as the consumer does it (inbox claim + apply + outbox) with the embedded
    bus's outbox (the PostgreSQL log) and with Kafka's (the outbox table a relay ships);
    then, labelled apart, the last one with synchronous_commit off (not what the service
    runs: an acknowledged event could be lost),
  - batches of 100 orders as the consumer applies a poll.
Recomputes run as the service runs them: a second connection reads the average basket.
Prints the figures and writes them as JSON to bench/results/rfm.json.

    uv run --frozen python bench/rfm.py --contacts 1000000
    uv run --frozen python bench/rfm.py --contacts 50000 --events 500 --out /tmp/rfm.json  # quick

Without --dsn a throwaway PostgreSQL is started with pgserver. Goals: full recompute
<= 5 s for 1M contacts / 5M orders; per-event p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from relance_events.event import new_event
from relance_events.payloads import OrderCompleted
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.db import migrate
from relance_runtime.inbox import claim_new
from relance_runtime.outbox import Outbox, TableOutbox
from relance_runtime.platform import LogOutbox
from relance_segmentation.adapters.postgres import SegmentationRepository
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


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    latencies.sort()
    return (
        statistics.median(latencies),
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run(dsn: str, contacts: int, events: int, seed: int) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'create database "{name}"')
    base, _, query = dsn.partition("?")
    db_dsn = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    conn = await asyncpg.connect(db_dsn)
    side = await asyncpg.connect(db_dsn)
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        await migrate(conn)
        names = TopicNames("bench.")
        bus = PostgresLogBus(pool, db_dsn, names=names)
        await bus.start()
        log_outbox = LogOutbox(bus)
        table_outbox = TableOutbox(lambda event: to_message(event, names))
        orders, load_s = await load(conn, contacts, seed)
        print(f"loaded {contacts:,} contacts / {orders:,} orders in {load_s:.1f} s")
        repo = SegmentationRepository(LifecycleConfig(), basket_window_days=365)
        load_at_start = _load_average()

        t = time.perf_counter()
        async with conn.transaction():
            first = await repo.recompute(conn, SHOP, NOW, side=side)
        first_s = time.perf_counter() - t
        print(
            f"first full recompute: {first_s:.2f} s ({first.profiles_written:,} profiles, "
            f"{first.changes_recorded:,} changes staged)"
        )
        await conn.execute("vacuum analyze segmentation_contacts, segmentation_profiles")

        steady_now = NOW + timedelta(days=1)
        t = time.perf_counter()
        async with conn.transaction():
            steady = await repo.recompute(conn, SHOP, steady_now, side=side)
            sql_s = time.perf_counter() - t
            emitted = 0
            async for chunk in repo.recompute_changes(conn, SHOP, steady_now):
                await log_outbox.add(conn, [c.event() for c in chunk])
                emitted += len(chunk)
        steady_s = time.perf_counter() - t
        print(
            f"next-day full recompute: {steady_s:.2f} s (SQL {sql_s:.2f} s; "
            f"{steady.profiles_written:,} profiles, {emitted:,} change events published)"
        )

        # The bulk load and the recomputes left ~2 GB of WAL and dirty pages: flush them now,
        # not under the latency loops (a steady stream does not follow a bulk load).
        await conn.execute("checkpoint")
        rnd = random.Random(seed + 1)
        at = NOW + timedelta(days=1, hours=1)
        numbered = iter(range(10**9))

        def order() -> Any:
            return new_event(
                OrderCompleted(
                    order_id=f"live{next(numbered)}",
                    total=Decimal(rnd.randrange(500, 30000)) / 100,
                ),
                shop_id=SHOP,
                contact_key=f"c{rnd.randrange(contacts)}",
                source="bench",
                occurred_at=at,
            )

        # The order arrives built (decoded by the consumer loop): only its handling is timed.
        async def floor_once(_: Any) -> None:
            async with conn.transaction():
                await conn.execute(
                    "update segmentation_shop_stats set contacts = contacts where shop_id = $1",
                    SHOP,
                )

        async def alone_once(event: Any) -> None:
            async with conn.transaction():
                await repo.apply_event(conn, event, at)

        changed = 0

        def consumer_once(outbox: Outbox) -> Callable[[Any], Awaitable[None]]:
            async def once(event: Any) -> None:
                nonlocal changed
                async with conn.transaction():
                    if await claim_new(conn, "segmentation", [event.event_id]):
                        made = await repo.apply_event(conn, event, at)
                        await outbox.add(conn, [c.event() for c in made])
                        changed += bool(made)

            return once

        variants: dict[str, Callable[[Any], Awaitable[None]]] = {
            "commit_floor": floor_once,
            "event": alone_once,
            "event_with_inbox_outbox": consumer_once(log_outbox),
            "event_with_inbox_kafka_outbox": consumer_once(table_outbox),
        }
        timings: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(events):
            for key, once in variants.items():
                event = order()
                t = time.perf_counter()
                await once(event)
                timings[key].append((time.perf_counter() - t) * 1000)
        figures: dict[str, float] = {}
        for key, latencies in timings.items():
            p50, p99 = _percentiles(latencies)
            figures[f"{key}_p50_ms"] = round(p50, 3)
            figures[f"{key}_p99_ms"] = round(p99, 3)
            print(f"{key}: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {events:,}")
        print(f"({changed:,} of {2 * events:,} consumer-path orders changed a stage/tier/segment)")

        # Not the service's setting: shows how much of the figure is the WAL flush.
        await conn.execute("set synchronous_commit = off")
        unsafe: list[float] = []
        once = consumer_once(table_outbox)
        for _ in range(events):
            event = order()
            t = time.perf_counter()
            await once(event)
            unsafe.append((time.perf_counter() - t) * 1000)
        await conn.execute("reset synchronous_commit")
        u50, u99 = _percentiles(unsafe)
        print(
            f"UNSAFE, synchronous_commit=off: inbox + apply + Kafka outbox p50 {u50:.2f} ms, "
            f"p99 {u99:.2f} ms"
        )

        # what the consumer does: a polled batch in one transaction
        batch_size = 100
        per_event: list[float] = []
        batches: list[float] = []
        for _ in range(10 * events // batch_size):
            batch = [order() for _ in range(batch_size)]
            t = time.perf_counter()
            async with conn.transaction():
                new = await claim_new(conn, "segmentation", [e.event_id for e in batch])
                made = []
                for e in batch:
                    if e.event_id in new:
                        made.extend(c.event() for c in await repo.apply_event(conn, e, at))
                await log_outbox.add(conn, made)
            took = (time.perf_counter() - t) * 1000
            batches.append(took)
            per_event.append(took / batch_size)
        b50, b99 = _percentiles(batches)
        print(
            f"batches of {batch_size} (inbox + apply + outbox): per event "
            f"{statistics.mean(per_event):.2f} ms on average; whole batch p50 {b50:.1f} ms, "
            f"p99 {b99:.1f} ms over {len(batches)} batches"
        )
        return {
            "contacts": contacts,
            "orders": orders,
            "load_s": round(load_s, 2),
            "first_recompute_s": round(first_s, 3),
            "first_recompute_profiles_written": first.profiles_written,
            "first_recompute_changes_staged": first.changes_recorded,
            "steady_recompute_s": round(steady_s, 3),
            "steady_recompute_sql_s": round(sql_s, 3),
            "steady_recompute_profiles_written": steady.profiles_written,
            "steady_recompute_change_events": emitted,
            "event_count": events,
            **figures,
            "unsafe_synchronous_commit_off": {
                "what": "inbox + apply + Kafka outbox with synchronous_commit=off; NOT the "
                "service's setting (an acknowledged event could be lost)",
                "p50_ms": round(u50, 3),
                "p99_ms": round(u99, 3),
            },
            "batch_size": batch_size,
            "batched_event_mean_ms": round(statistics.mean(per_event), 3),
            "batch_p50_ms": round(b50, 2),
            "batch_p99_ms": round(b99, 2),
            "goals": {"full_recompute_s": 5.0, "event_p99_ms": 5.0},
            "load_avg_1_5_15_before_recomputes": load_at_start,
        }
    finally:
        await pool.close()
        await side.close()
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
    parser.add_argument("--note", default="", help="what else ran on the machine")
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
    figures["machine"] = {"cpus": os.cpu_count(), "load_avg_1_5_15_at_end": _load_average()}
    if args.note:
        figures["note"] = args.note
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
