"""End-to-end load: the services as OS processes on Kafka + PostgreSQL.

1. Throughput, per mix (`views`: product views only; `storefront`: mostly views, with
   carts, checkouts, identifies and first orders): N Segment messages posted to ingest's
   `/v1/batch` (100 per call, several calls in flight), then one marker identify per
   partition; sustained events/s = N / the time until both segmentation and orchestrator
   applied every marker (so every event before them, including the views they skip).
2. Latency at a fixed rate (default 500 events/s), per mix, after 3 s unmeasured: each
   100 ms a batch of the `storefront` mix (each order a new customer's first), or of
   `first_orders` (a fifth of the events new contacts' identify + first order, the rest
   product views: a stress); latency = from the moment the ingest request is written
   (requests are encoded beforehand and sent on raw keep-alive connections) to the SMTP
   server's 250 for the welcome email of each first `Order Completed` (the immediate
   `welcome_pack/welcome` step), p50/p99. The ledger's settling time and the hops between
   the services' own timestamps say where the time went.
3. CPU per service process (utime + stime from /proc/<pid>/stat) during each phase, and
   with no load at all (`idle`: what the services cost just waiting).

The services run one process each by default (`--layout` changes that; the e2e suite runs
two of segmentation, orchestrator and sender). Needs the broker of `make infra-up`
(127.0.0.1:9092) and starts an embedded PostgreSQL (pgserver) of its own. Writes
bench/results/e2e.json.

    uv run --frozen python bench/e2e.py [--events 30000] [--rate 500] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from loadgen import RawConnection, basic_auth, post_request

from relance_events.topics import EVENTS
from relance_runtime.bus.messages import partition_for

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e" / "system"))

from harness import (  # noqa: E402
    DEFAULT_LAYOUT,
    SHOP,
    WRITE_KEY,
    Proc,
    System,
    event_ids,
    identify,
    order,
    track,
)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def cpu_snapshot(procs: Sequence[Proc]) -> dict[str, float]:
    """Each service process's CPU seconds, plus what runs beside them: PostgreSQL (every
    live `postgres` process), the Kafka broker (`java`), this bench process (load generator
    and SMTP mailbox), and the whole machine's busy time (`machine`)."""
    snapshot = {p.name: cpu_seconds(p.popen.pid) for p in procs if p.alive}
    beside = {"postgresql": 0.0, "kafka broker": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm in ("postgres", "java"):
                role = "postgresql" if comm == "postgres" else "kafka broker"
                beside[role] += cpu_seconds(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
    snapshot.update(beside)
    snapshot["bench (load + mailbox)"] = cpu_seconds(os.getpid())
    busy = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    snapshot["machine"] = (sum(int(x) for x in busy[:8]) - int(busy[3]) - int(busy[4])) / TICK
    return snapshot


def cpu_report(
    before: dict[str, float], after: dict[str, float], procs: Sequence[Proc], wall: float
) -> dict[str, Any]:
    names = {p.name for p in procs}
    per_instance = {
        n: round((after[n] - before.get(n, 0.0)) / wall, 3) for n in after if n in names
    }
    per_service: dict[str, float] = {}
    for proc in procs:
        if proc.name in per_instance:
            per_service[proc.service] = round(
                per_service.get(proc.service, 0.0) + per_instance[proc.name], 3
            )
    beside = {
        n: round((after[n] - before.get(n, 0.0)) / wall, 3)
        for n in after
        if n not in names and n != "machine"
    }
    return {
        "cores_per_instance": per_instance,
        "cores_per_service": per_service,
        "cores_beside": beside,
        "machine_busy_cores": round((after["machine"] - before["machine"]) / wall, 3),
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


MIXES = ("views", "storefront")


def mix_messages(mix: str, total: int, now: Any) -> list[dict[str, Any]]:
    """`views`: product views of 5,000 contacts (what most of a shop's stream is).
    `storefront`: per 100 events, 94 product views, 3 `Product Added`, 1 `Checkout Started`,
    1 identify (with email consent) and 1 first `Order Completed` (a welcome email and the
    plans of a new customer); about 10x the order share of a real storefront's stream."""
    if mix == "views":
        return [
            track(f"b-{i % 5000}", "Product Viewed", {"product_id": f"p-{i}"}, now)
            for i in range(total)
        ]
    return [storefront_message(i, now) for i in range(total)]


def storefront_message(i: int, now: Any, tag: str = "s") -> dict[str, Any]:
    """The `i`th message of the storefront mix; buyers are named `{tag}-{i // 100}`."""
    buyer = f"{tag}-{i // 100}"
    match i % 100:
        case 0:
            traits = {"email": f"{buyer}@example.com", "email_consent": "granted"}
            return identify(buyer, traits, now)
        case 1 | 2 | 3:
            line = {"cart_id": f"c-{buyer}", "product_id": f"p-{i % 100}", "price": 12.5}
            return track(buyer, "Product Added", {**line, "quantity": 1}, now)
        case 4:
            return track(buyer, "Checkout Started", {"cart_id": f"c-{buyer}"}, now)
        case 5:
            return order(buyer, f"o-{buyer}", 37.5, now)
        case _:
            return track(f"b-{i % 5000}", "Product Viewed", {"product_id": f"p-{i}"}, now)


def partition_markers(tag: str, now: Any) -> list[dict[str, Any]]:
    """One identify per partition of the events topic, posted after everything else. Each
    consumer handles a partition in order, so once both have applied every marker, every
    earlier event is behind them (views, which neither applies, leave no other trace)."""
    users: dict[int, str] = {}
    n = 0
    while len(users) < EVENTS.partitions:
        user = f"mark-{tag}-{n}"
        users.setdefault(partition_for(f"{SHOP}\x1f{user}".encode(), EVENTS.partitions), user)
        n += 1
    return [identify(u, {"first_name": "Marker"}, now) for u in users.values()]


async def throughput(system: System, total: int, mix: str, concurrency: int = 16) -> dict[str, Any]:
    now = system.now()
    messages = mix_messages(mix, total, now)
    markers = partition_markers(uuid.uuid4().hex[:8], now)
    marker_ids = [i for v in event_ids(markers).values() for i in v]
    # Requests encoded up front and sent on raw keep-alive connections: the load
    # generator shares the 2 cores with the system (httpx would cost more than ingest).
    auth = basic_auth(WRITE_KEY)
    requests = [
        post_request(system.ingest_url, "/v1/batch", auth, orjson.dumps({"batch": chunk}))
        for chunk in (messages[i : i + 100] for i in range(0, total, 100))
    ]

    async def send(pending: Iterator[bytes]) -> None:
        """Send requests from the shared iterator on one connection until none is left."""
        connection = await RawConnection.open(system.ingest_url)
        try:
            for request in pending:
                while await connection.post(request) != 200:
                    await asyncio.sleep(0.2)  # 503 (the bus is busy): retry, as an SDK would
        finally:
            connection.close()

    procs = [p for p in system.procs if p.alive]
    cpu0 = cpu_snapshot(procs)
    start = time.monotonic()
    shared = iter(requests)
    await asyncio.gather(*(send(shared) for _ in range(concurrency)))
    ingested = time.monotonic() - start
    marker_body = orjson.dumps({"batch": markers})
    await send(iter([post_request(system.ingest_url, "/v1/batch", auth, marker_body)]))
    conn = await asyncpg.connect(system.database_url)
    done: dict[str, float] = {}
    try:
        while len(done) < 2:
            for consumer in ("segmentation", "orchestrator"):
                if consumer in done:
                    continue
                count = await conn.fetchval(
                    "SELECT count(*) FROM runtime_inbox WHERE consumer = $1"
                    " AND event_id = ANY($2::uuid[])",
                    consumer,
                    marker_ids,
                )
                if count >= len(marker_ids):
                    done[consumer] = time.monotonic() - start
            if time.monotonic() - start > 600:
                raise SystemExit(f"not processed after 600 s: {done}")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    wall = max(done.values())
    cpu1 = cpu_snapshot(procs)
    return {
        "mix": mix,
        "events": total,
        "connections": concurrency,
        "ingest_s": round(ingested, 2),
        "ingest_events_per_s": round(total / ingested),
        "segmentation_done_s": round(done["segmentation"], 2),
        "orchestrator_done_s": round(done["orchestrator"], 2),
        "sustained_events_per_s": round(total / wall),
        "cpu": cpu_report(cpu0, cpu1, procs, wall),
    }


async def idle(system: System, seconds: float) -> dict[str, Any]:
    """What the system costs doing nothing: CPU per process over `seconds` without load."""
    await asyncio.sleep(3)  # startup work (topic metadata, first polls) settles
    before = cpu_snapshot(system.procs)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - started
    return {
        "seconds": round(wall, 1),
        "cpu": cpu_report(before, cpu_snapshot(system.procs), system.procs, wall),
    }


def latency_ticks(mix: str, per_tick: int, tag: str, now: Any) -> Iterator[list[dict[str, Any]]]:
    """The batches posted each tick. `first_orders`: a fifth of the events are new
    contacts' identify and first order (10 % orders, a stress: about 100x a real shop's
    order share), the rest product views. `storefront`: the throughput mix (1 % first
    orders), with this run's own buyers."""
    tick = 0
    while True:
        batch: list[dict[str, Any]] = []
        if mix == "first_orders":
            for k in range(max(1, per_tick // 10)):
                user = f"l-{tag}-{tick}-{k}"
                batch.append(identify(user, {"email": f"{user}@example.com", "locale": "en"}, now))
                batch.append(order(user, f"o-{user}", 50.0, now))
            while len(batch) < per_tick:
                batch.append(track(f"v-{len(batch)}", "Product Viewed", {"product_id": "p"}, now))
        else:
            start = tick * per_tick
            batch = [storefront_message(i, now, tag) for i in range(start, start + per_tick)]
        yield batch
        tick += 1


async def latency(
    system: System,
    rate: int,
    seconds: float,
    mix: str = "first_orders",
    warmup_s: float = 3.0,
    tick_s: float = 0.1,
) -> dict[str, Any]:
    per_tick = max(1, round(rate * tick_s))
    sent_at: dict[str, float] = {}
    procs = [p for p in system.procs if p.alive]
    ticks = latency_ticks(mix, per_tick, uuid.uuid4().hex[:6], system.now())
    # Requests are encoded before the clock starts and sent on raw keep-alive connections
    # (as in the throughput phase): the clock of an order starts when its request is
    # written, not while the load generator builds it.
    auth = basic_auth(WRITE_KEY)

    def encoded(batch: list[dict[str, Any]]) -> tuple[bytes, list[str]]:
        """The request, and the addresses of the buyers whose clock it starts."""
        buyers = [
            f"{m['userId']}@example.com" for m in batch if m.get("event") == "Order Completed"
        ]
        body = orjson.dumps({"batch": batch})
        return post_request(system.ingest_url, "/v1/batch", auth, body), buyers

    warm = [encoded(next(ticks)) for _ in range(round(warmup_s / tick_s))]
    measured_batches = [next(ticks) for _ in range(round(seconds / tick_s))]
    measured = [encoded(batch) for batch in measured_batches]
    idle: list[tuple[RawConnection, float]] = []  # with when each was last used
    answered_ms: list[float] = []

    async def connection() -> RawConnection:
        # uvicorn closes a keep-alive connection idle for 5 s: older ones are not reused
        while idle:
            conn, used = idle.pop()
            if time.monotonic() - used < 2.0:
                return conn
            conn.close()
        return await RawConnection.open(system.ingest_url)

    async def send(request: bytes, buyers: Sequence[str]) -> int:
        conn = await connection()
        began = time.time()
        for buyer in buyers:
            sent_at[buyer] = began
        status = await conn.post(request)
        answered_ms.append((time.time() - began) * 1000)
        idle.append((conn, time.monotonic()))
        return status

    async def offer(requests: Sequence[tuple[bytes, list[str]]]) -> tuple[list[int], float]:
        pending: list[asyncio.Task[int]] = []
        began = time.monotonic()
        for tick, (request, buyers) in enumerate(requests):
            pending.append(asyncio.create_task(send(request, buyers)))
            await asyncio.sleep(max(0.0, began + (tick + 1) * tick_s - time.monotonic()))
        return list(await asyncio.gather(*pending)), began

    # Unmeasured: the first seconds at a new rate (pools, caches, the broker's JIT).
    await offer(warm)
    sent_at.clear()
    answered_ms.clear()
    cpu0 = cpu_snapshot(procs)
    statuses, start = await offer(measured)
    posted = sum(len(batch) for batch in measured_batches)
    for conn, _ in idle:
        conn.close()
    offered = time.monotonic() - start
    refused = sum(1 for status in statuses if status != 200)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = {r for m in system.mailbox.all() for r in m.rcpt_tos if r in sent_at}
        if len(got) >= len(sent_at):
            break
        await asyncio.sleep(0.5)
    cpu1 = cpu_snapshot(procs)
    smtp = [
        (m.received_at - sent_at[r]) * 1000
        for m in system.mailbox.all()
        for r in m.rcpt_tos
        if r in sent_at
    ]
    result: dict[str, Any] = {
        "mix": mix,
        "request_every_ms": round(tick_s * 1000),
        "events_per_request": per_tick,
        "offered_events_per_s": round(posted / offered),
        "orders": len(sent_at),
        "refused_batches": refused,
        "welcome_emails": len(smtp),
        "cpu": cpu_report(cpu0, cpu1, procs, time.monotonic() - start),
        # the whole batch's request, as the load generator saw it
        "ingest_batch_answered_ms": {
            "p50": round(statistics.median(answered_ms), 1),
            "p99": round(percentile(answered_ms, 0.99), 1),
        },
    }
    if smtp:
        result["ingest_to_smtp_250_ms"] = {
            "p50": round(statistics.median(smtp), 1),
            "p99": round(percentile(smtp, 0.99), 1),
            "max": round(max(smtp), 1),
        }
    conn = await asyncpg.connect(system.database_url)
    try:
        rows = await conn.fetch(
            "SELECT l.address, l.state, extract(epoch FROM l.updated_at) AS settled,"
            " extract(epoch FROM l.created_at) AS claimed, extract(epoch FROM j.at) AS decided"
            " FROM sender_ledger l LEFT JOIN orchestrator_journal j"
            "  ON j.message_id = l.message_id AND j.kind = 'requested'"
            " WHERE l.address = ANY($1::text[])",
            list(sent_at),
        )
    finally:
        await conn.close()
    settled = [(float(r["settled"]) - sent_at[r["address"]]) * 1000 for r in rows]
    result["ledger_states"] = sorted({str(r["state"]) for r in rows})
    if settled:
        result["ingest_to_ledger_settled_ms"] = {
            "count": len(settled),
            "p50": round(statistics.median(settled), 1),
            "p99": round(percentile(settled, 0.99), 1),
        }
    # Where the time goes, hop by hop, from the services' own timestamps (same host clock).
    received = {r: m.received_at for m in system.mailbox.all() for r in m.rcpt_tos}
    hops: dict[str, list[float]] = {
        "request_to_orchestrator_decision": [],
        "decision_to_sender_claim": [],
        "claim_to_ledger_settled": [],
        "settled_to_smtp_250_seen": [],
    }
    for r in rows:
        if r["decided"] is None or r["address"] not in received:
            continue
        start, decided = sent_at[r["address"]], float(r["decided"])
        claimed, done = float(r["claimed"]), float(r["settled"])
        hops["request_to_orchestrator_decision"].append((decided - start) * 1000)
        hops["decision_to_sender_claim"].append((claimed - decided) * 1000)
        hops["claim_to_ledger_settled"].append((done - claimed) * 1000)
        hops["settled_to_smtp_250_seen"].append((received[r["address"]] - done) * 1000)
    result["hops_ms"] = {
        name: {"p50": round(statistics.median(v), 1), "p99": round(percentile(v, 0.99), 1)}
        for name, v in hops.items()
        if v
    }
    return result


def span_gaps(spans: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For each trace that reached `sender.send`: the gaps between the first span of each
    service along the way (start to start), and each span's own duration, p50/p99."""
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(str(span["trace_id"]), []).append(span)
    gaps: dict[str, list[float]] = {}
    for trace in by_trace.values():
        if not any(s["name"] == "sender.send" for s in trace):
            continue
        trace.sort(key=lambda s: int(s["start_ns"]))
        first: dict[str, dict[str, Any]] = {}
        for span in trace:
            first.setdefault(str(span["name"]), span)
        ordered = sorted(first.values(), key=lambda s: int(s["start_ns"]))
        for a, b in itertools.pairwise(ordered):
            gap = (int(b["start_ns"]) - int(a["start_ns"])) / 1e6
            gaps.setdefault(f"{a['name']} -> {b['name']}", []).append(gap)
        for span in ordered:
            gaps.setdefault(f"{span['name']} (duration)", []).append(
                (int(span["end_ns"]) - int(span["start_ns"])) / 1e6
            )
    return {
        name: {
            "n": len(v),
            "p50": round(statistics.median(v), 1),
            "p99": round(percentile(v, 0.99), 1),
        }
        for name, v in sorted(gaps.items())
    }


# One process per service: on 2 cores, a second instance of a service adds its idle cost,
# its fetches and its transactions without a core to run on (measured: storefront 4,300
# events/s with two instances of segmentation, orchestrator and sender, 5,400 with one).
BENCH_LAYOUT: dict[str, int] = dict.fromkeys(DEFAULT_LAYOUT, 1)


def parse_layout(text: str) -> dict[str, int]:
    """`service=n,...` -> {service: n}; every service named must exist."""
    layout: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        service, _, count = item.partition("=")
        if service not in DEFAULT_LAYOUT or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--layout: {item!r} is not SERVICE=N (N >= 1)")
        layout[service] = int(count)
    return layout


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """The run's topics: a broker keeping every run's partitions gets slower."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument(
        "--mix",
        default=",".join(MIXES),
        help="throughput mixes, comma-separated: views (product views only), storefront"
        " (94%% views, carts, checkouts, identifies, 1%% first orders)",
    )
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument(
        "--latency-mix",
        default="storefront,first_orders",
        help="latency mixes, comma-separated: storefront (the throughput mix, 1%% first"
        " orders), first_orders (10%% new contacts' first orders: a stress)",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--request-every-ms",
        type=float,
        default=100.0,
        help="latency phase: one /v1/batch request this often, carrying rate x interval"
        " events (100 ms: 50-event batches, as a server-side SDK flushes; 2 ms: one event"
        " per request, as a browser sends)",
    )
    parser.add_argument(
        "--phases",
        default="idle,throughput,latency",
        help="which phases to run, comma-separated (idle: CPU with no load)",
    )
    parser.add_argument(
        "--spans",
        action="store_true",
        help="export spans to a file (costs CPU) and print where each welcome's time went",
    )
    parser.add_argument(
        "--kafka", default=os.environ.get("RELANCE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service (repeatable), e.g. RELANCE_CONSUMER_BATCH_SIZE=16",
    )
    parser.add_argument(
        "--layout",
        default="",
        metavar="SERVICE=N,...",
        help="processes per service (default: one each, what 2 cores hold best), e.g."
        " segmentation=2,orchestrator=2,sender=2 for the e2e suite's layout",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e.json")
    args = parser.parse_args()

    import pgserver

    tmp = Path(tempfile.mkdtemp(prefix="relance-e2e-bench-"))
    server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="stop")
    root = str(server.get_uri())
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(root)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = urlunsplit(urlsplit(root)._replace(path=f"/{name}"))
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    system = System(
        tmp,
        dsn,
        args.kafka,
        prefix,
        layout={**BENCH_LAYOUT, **parse_layout(args.layout)},
        extra_env={
            **({} if args.spans else {"RELANCE_OTEL_EXPORTER": "none"}),
            "RELANCE_LOG_LEVEL": "WARNING",
            "RELANCE_DB_POOL_MAX": "20",
            **dict(setting.split("=", 1) for setting in args.env),
        },
    )
    load_before = os.getloadavg()
    try:
        started = time.monotonic()
        await asyncio.to_thread(system.start)
        startup = time.monotonic() - started
        print(f"system ready in {startup:.1f} s", flush=True)
        tput: dict[str, Any] = {}
        lat: dict[str, Any] = {}
        quiet: dict[str, Any] = {}
        if "idle" in args.phases:
            quiet = await idle(system, 10.0)
            print(json.dumps({"idle": quiet}, indent=2), flush=True)
        if "throughput" in args.phases:
            # A fresh broker compiles its hot paths in the first seconds of load: warm it
            # (and the services) up with a short run that is not measured.
            await throughput(system, 5_000, "views")
            for mix in args.mix.split(","):
                tput[mix] = await throughput(system, args.events, mix)
                print(json.dumps({"throughput": tput[mix]}, indent=2), flush=True)
        if "latency" in args.phases:
            for mix in args.latency_mix.split(","):
                lat[mix] = await latency(
                    system, args.rate, args.seconds, mix, tick_s=args.request_every_ms / 1000
                )
                print(json.dumps({"latency": lat[mix]}, indent=2), flush=True)
        if args.spans:
            await asyncio.sleep(2)  # the batch span processors flush
            print(json.dumps({"span_gaps_ms": span_gaps(system.spans())}, indent=2))
    finally:
        await asyncio.to_thread(system.stop)
        server.cleanup()
        await delete_topics(args.kafka, prefix)
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "kafka": args.kafka,
        "layout": dict(system.layout),
        "settings": args.env,
        "startup_s": round(startup, 1),
        "idle": quiet,
        "throughput": tput,
        "latency": lat,
        "goals": {"sustained_events_per_s": 15000, "p50_ms": 30, "p99_ms": 200},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
