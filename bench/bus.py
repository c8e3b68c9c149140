"""Bus benchmark: throughput and end-to-end latency through real Kafka and the PostgreSQL log.

    .venv/bin/python bench/bus.py                    # both buses, default sizes
    .venv/bin/python bench/bus.py --bus kafka --events 300000 --rate 1000 --seconds 10

Throughput: N events published in batches (acks=all, idempotent producer) and read back by
one consumer. Latency: events paced at --rate per second; each carries its send time; the
consumer records receive - send. Producer and consumer run in this one process (one core);
the broker or PostgreSQL runs beside it on the other core. Figures are printed and written
to bench/results/bus.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from relance_events import new_event
from relance_events.payloads import CustomTracked
from relance_events.topics import EVENTS
from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.ports import Bus, OutgoingMessage
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.db import migrate

RESULTS = Path(__file__).with_name("results") / "bus.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_messages(names: TopicNames, n: int, payload_props: int = 4) -> list[OutgoingMessage]:
    now = datetime.now(UTC)
    props: dict[str, Any] = {f"k{i}": "v" * 12 for i in range(payload_props)}
    return [
        to_message(
            new_event(
                CustomTracked(name="bench", properties=props),
                shop_id="shop",
                contact_key=f"c{i % 10_000}",
                source="bench",
                occurred_at=now,
            ),
            names,
        )
        for i in range(n)
    ]


async def throughput(bus: Bus, names: TopicNames, n: int, batch: int) -> dict[str, float]:
    messages = make_messages(names, n)
    size = sum(len(m.value) for m in messages) / n
    started = time.perf_counter()
    for start in range(0, n, batch):
        await bus.publish_raw(messages[start : start + batch])
    produce_s = time.perf_counter() - started

    consumer = bus.consumer(f"bench-{uuid.uuid4().hex[:6]}", [names.of(EVENTS)])
    await consumer.start()
    got = 0
    started = time.perf_counter()
    while got < n:
        records = await consumer.poll(max_records=5000, timeout_s=1.0)
        got += len(records)
    consume_s = time.perf_counter() - started
    await consumer.stop()
    return {
        "events": n,
        "batch": batch,
        "avg_event_bytes": round(size),
        "produced_per_s": round(n / produce_s),
        "consumed_per_s": round(n / consume_s),
    }


async def latency(bus: Bus, names: TopicNames, rate: int, seconds: float) -> dict[str, float]:
    consumer = bus.consumer(f"lat-{uuid.uuid4().hex[:6]}", [names.of(EVENTS)])
    await consumer.start()
    # Let the consumer join and reach the end of the topic before measuring.
    while await consumer.poll(max_records=10_000, timeout_s=1.0):
        pass
    total = int(rate * seconds)
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < total:
            for record in await consumer.poll(max_records=1000, timeout_s=0.5):
                sent = float(record.header("bench-sent") or b"0")
                if sent:
                    latencies.append((time.perf_counter() - sent) * 1000)

    reader = asyncio.create_task(consume())
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(total):
        target = start + i * interval
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        (message,) = make_messages(names, 1, payload_props=1)
        stamped = OutgoingMessage(
            message.topic,
            message.key,
            message.value,
            (*message.headers, ("bench-sent", repr(time.perf_counter()).encode())),
        )
        await bus.publish_raw([stamped])
    await asyncio.wait_for(reader, timeout=60)
    await consumer.stop()
    return {
        "rate_per_s": rate,
        "events": total,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


async def run_kafka(args: argparse.Namespace) -> dict[str, Any]:
    names = TopicNames(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    bus = KafkaBus(args.bootstrap, names=names, linger_ms=args.linger_ms)
    await bus.start()
    await bus.ensure_topics()
    try:
        return {
            "throughput": await throughput(bus, names, args.events, args.batch),
            "latency": await latency(bus, names, args.rate, args.seconds),
        }
    finally:
        await bus.stop()


async def run_postgres(args: argparse.Namespace) -> dict[str, Any]:
    dsn = args.dsn
    if dsn is None:
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="relance-bench-"), cleanup_mode="stop")
        dsn = server.get_uri()
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
    assert pool is not None
    names = TopicNames(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    bus = PostgresLogBus(pool, dsn, names=names)
    await bus.start()
    try:
        return {
            "throughput": await throughput(bus, names, args.pg_events, args.batch),
            "latency": await latency(bus, names, args.rate, args.seconds),
        }
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bus", choices=["kafka", "postgres", "both"], default="both")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("RELANCE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("RELANCE_DATABASE_URL"),
        help="PostgreSQL (default: a throwaway pgserver)",
    )
    parser.add_argument(
        "--events", type=int, default=300_000, help="events for the Kafka throughput run"
    )
    parser.add_argument(
        "--pg-events", type=int, default=100_000, help="events for the PostgreSQL throughput run"
    )
    parser.add_argument("--batch", type=int, default=1000, help="events per publish call")
    parser.add_argument("--rate", type=int, default=1000, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the latency run")
    parser.add_argument("--linger-ms", type=int, default=2)
    parser.add_argument("--note", help="what else ran on the machine, stored with the figures")
    args = parser.parse_args()

    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({"at": datetime.now(UTC).isoformat(), "cpus": os.cpu_count()})
    if args.note:
        results["note"] = args.note
    if args.bus in ("kafka", "both"):
        results["kafka"] = asyncio.run(run_kafka(args))
        print("kafka   ", json.dumps(results["kafka"]))
    if args.bus in ("postgres", "both"):
        results["postgres"] = asyncio.run(run_postgres(args))
        print("postgres", json.dumps(results["postgres"]))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
