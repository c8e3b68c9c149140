"""Durable-timer benchmark: 1M pending timers in PostgreSQL, fired through the orchestrator.

`--path engine` (the default) measures what the service does: each process runs the real
`Orchestrator.fire_due` (claim with FOR UPDATE SKIP LOCKED, lock the contacts, load their
states, `Engine.decide` per wake-up, write states / timers / journal / `message.requested`
events to the outbox in the same transaction) and, when a broker answers, the outbox relay
publishing those events to Kafka. Contacts are built by the real engine from Segment
messages (a first order; an abandoned cart; a repeat customer), so the states and the
steps fired (second purchase, cart reminder, survey) are the real ones.

`--path store` measures the timer store alone (claim, delete, an outbox row): the ceiling
the engine path is held to. `--path replay` runs the engine path with each wake-up's
decision replayed instead of taken (`ReplayedDecisions`): what a firing costs beside the
engine's own work, so the most any speed-up of the engine could give.

Phase 1 (throughput): one timer per contact is already due, the contacts' other timers
are pending in the future; the timers fired/s while draining the due ones.
Phase 2 (lateness): timers fall due at a steady rate; lateness = commit time of the
firing transaction - due time; p50 / p99. The rate defaults to the goal (20,000/s); if
phase 1 showed the machine cannot fire that many, it is also run at 80 % of what it can.

Each phase also reports the CPU seconds of the firing processes (relay included) and,
beside them, of PostgreSQL and the Kafka broker, which share the same cores.

    uv run --frozen python bench/timers.py [--timers 1000000] [--processes 2] [--dsn DSN]

Without --dsn an embedded PostgreSQL (pgserver) is started in a temp directory. The
orchestrator's clock is the wall clock shifted so the contacts' steps fall due when the
bench wants them (as the e2e suite shifts the whole system's clock). Prints and writes
bench/results/timers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from relance_orchestrator.adapters.postgres_shops import PostgresShopDirectory
from relance_orchestrator.adapters.postgres_timers import (
    PostgresContactStore,
    PostgresJournal,
    PostgresTimerStore,
)
from relance_orchestrator.adapters.state_codec import pack_state
from relance_orchestrator.domain.commands import (
    CancelWakeups,
    Command,
    RequestMessage,
    Wakeup,
)
from relance_orchestrator.domain.engine import Engine, Input, message_id_for
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.policy import Policy
from relance_orchestrator.domain.state import ContactState
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.ports import DueTimer
from relance_orchestrator.services import Orchestrator
from relance_orchestrator.simulate import Simulation, read_segment_jsonl
from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.db import migrate
from relance_runtime.gc_tuning import parse_thresholds, tune_gc
from relance_runtime.outbox import OutboxRelay, TableOutbox
from relance_runtime.settings import CommonSettings

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "timers.json"
SHOP = "shop"
PLACEHOLDER = "zz-contact-placeholder-zz"
GOAL_RATE = 20_000.0
GOAL_P99_MS = 250.0


# --- contacts built by the real engine ---------------------------------------------------


def _identify(at: datetime, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": PLACEHOLDER,
        "messageId": f"id-{at.timestamp()}",
        "timestamp": at.isoformat(),
        "traits": {"email": "ann@example.fr", "first_name": "Ann", **traits},
    }


def _track(at: datetime, event: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": PLACEHOLDER,
        "messageId": f"tr-{event}-{at.timestamp()}",
        "event": event,
        "timestamp": at.isoformat(),
        "properties": properties,
    }


def _products(n: int) -> list[dict[str, Any]]:
    return [
        {
            "product_id": f"p{i}",
            "sku": f"SKU-{i}",
            "name": f"Produit {i}",
            "price": 19.9 + i,
            "quantity": 1 + i % 3,
            "category": "maison",
        }
        for i in range(n)
    ]


def _stories(t0: datetime) -> dict[str, list[dict[str, Any]]]:
    """Histories whose earliest pending step is a real send: second purchase, cart
    reminder 1, satisfaction survey."""
    return {
        "first_order": [
            _identify(t0, email_consent="granted", birthday="1990-03-04"),
            _track(
                t0 + timedelta(minutes=5),
                "Order Completed",
                order_id="o1",
                total=120,
                currency="EUR",
                products=_products(3),
            ),
        ],
        "abandoned_cart": [
            _identify(t0, email_consent="granted"),
            _track(t0 + timedelta(minutes=1), "Product Added", cart_id="k1", **_products(1)[0]),
            _track(t0 + timedelta(minutes=2), "Product Added", cart_id="k1", **_products(2)[1]),
        ],
        "repeat_customer": [
            _identify(t0 - timedelta(days=90), email_consent="granted", birthday="1985-11-20"),
            _track(
                t0 - timedelta(days=90),
                "Order Completed",
                order_id="o1",
                total=40,
                currency="EUR",
                products=_products(1),
            ),
            _track(
                t0 - timedelta(days=20),
                "Order Completed",
                order_id="o2",
                total=75,
                currency="EUR",
                products=_products(2),
            ),
            _track(
                t0 - timedelta(days=3),
                "Order Completed",
                order_id="o3",
                total=60,
                currency="EUR",
                products=_products(2),
            ),
        ],
    }


@dataclass(frozen=True)
class Template:
    name: str
    state: ContactState
    wakeups: dict[str, datetime]  # every pending wake-up; the earliest one is due first
    due_key: str
    due_at: datetime


def _build(engine: Engine, shop: ShopFacts, story: Sequence[dict[str, Any]]) -> ContactState:
    """The story through the backtest core (timers fire between events, as in the service)."""
    sim = Simulation(engine=engine, shop=shop)
    for event in read_segment_jsonl((orjson.dumps(m) for m in story), shop_id=SHOP):
        sim.feed(event)
    return sim.states[PLACEHOLDER]


def build_templates(engine: Engine, shop: ShopFacts, target: datetime) -> list[Template]:
    """One template per story, shifted so its earliest wake-up falls close to `target`."""
    out: list[Template] = []
    for name in _stories(target):
        state = _build(engine, shop, _stories(target)[name])
        earliest = min(state.wakeups().values())
        state = _build(engine, shop, _stories(target + (target - earliest))[name])
        wakeups = state.wakeups()
        due_key, due_at = min(wakeups.items(), key=lambda kv: kv[1])
        out.append(Template(name, state, wakeups, due_key, due_at))
    return out


async def load(
    conn: asyncpg.Connection,
    templates: Sequence[Template],
    due_of: Any,
    *,
    timers: int = 0,
    contacts_wanted: int = 0,
) -> tuple[int, int]:
    """Contacts round-robin over the templates until `timers` timers (or `contacts_wanted`
    contacts) exist; the earliest timer of contact i is due at `due_of(i, template)`.
    Returns (contacts, due timers)."""
    await conn.execute(
        "TRUNCATE orchestrator_contacts, orchestrator_timers, orchestrator_journal, runtime_outbox"
    )
    contacts: list[tuple[str, str, bytes]] = []
    rows: list[tuple[str, str, str, datetime]] = []
    i = 0
    while len(rows) < timers or i < contacts_wanted:
        template = templates[i % len(templates)]
        key = f"c{i:08d}"
        state = template.state
        state = state.evolve(
            {"contact_key": key, "facts": state.facts.evolve({"contact_key": key})}
        )
        contacts.append((SHOP, key, pack_state(state)))
        for timer_key, at in template.wakeups.items():
            due = due_of(i, template) if timer_key == template.due_key else at
            rows.append((SHOP, key, timer_key, due))
        i += 1
    await conn.copy_records_to_table(
        "orchestrator_contacts", records=contacts, columns=["shop_id", "contact_key", "packed"]
    )
    await conn.copy_records_to_table(
        "orchestrator_timers",
        records=rows,
        columns=["shop_id", "contact_key", "timer_key", "due_at"],
    )
    await conn.execute("VACUUM ANALYZE orchestrator_contacts")
    await conn.execute("VACUUM ANALYZE orchestrator_timers")
    return i, i


# --- one firing process -------------------------------------------------------------------


class RecordingTimers(PostgresTimerStore):
    """The real store; remembers what the current batch claimed, for lateness."""

    def __init__(self) -> None:
        self.claimed: dict[int, list[DueTimer]] = {}

    async def claim_due(self, conn: Any, now: datetime, limit: int) -> list[DueTimer]:
        due = await super().claim_due(conn, now, limit)
        self.claimed[id(asyncio.current_task())] = due
        return due


class ReplayedDecisions(Engine):
    """`--path replay`: an engine whose wake-up decisions cost next to nothing, to measure
    what a firing costs beside the engine's own work.

    The first wake-up of each timer key is decided for real; later ones replay its
    message requests, re-addressed to the contact (with the contact's own message id),
    leave the state as it was and cancel the fired timer. Everything else is the service's
    code: claim, lock, read and write the packed state, timers, journal, outbox, relay."""

    def __init__(self) -> None:
        super().__init__(load_plans(), Policy())
        self.first: dict[str, tuple[Command, ...]] = {}

    def decide(
        self, state: ContactState, event: Input, now: datetime, shop: ShopFacts
    ) -> tuple[ContactState, tuple[Command, ...]]:
        if not isinstance(event, Wakeup):
            return super().decide(state, event, now, shop)
        first = self.first.get(event.key)
        if first is None:
            first = self.first[event.key] = super().decide(state, event, now, shop)[1]
        requests: list[Command] = [
            replace(
                c,
                contact_key=state.contact_key,
                message_id=message_id_for(
                    state.shop_id, state.contact_key, c.plan, c.step, c.plan_instance
                ),
            )
            for c in first
            if isinstance(c, RequestMessage)
        ]
        return state, (*requests, CancelWakeups((event.key,)))


@dataclass(frozen=True)
class ProcessJob:
    dsn: str
    kafka: str | None
    offset_s: float  # business time = wall time + offset
    stop_after: int  # every process stops once the due timers are all gone
    workers: int
    batch: int
    rate_start_wall: float | None  # phase 2: timer i falls due at start + i / rate
    rate: float | None
    replay: bool = False  # --path replay


def _firing_process(job: ProcessJob, results: Any) -> None:
    results.put(asyncio.run(_fire(job)))


async def _fire(job: ProcessJob) -> dict[str, Any]:
    pool = await asyncpg.create_pool(job.dsn, min_size=job.workers + 2, max_size=job.workers + 2)
    names = TopicNames("bench-timers-")
    relay: OutboxRelay | None = None
    bus: KafkaBus | None = None
    if job.kafka:
        bus = KafkaBus(job.kafka, client_id="bench-timers", names=names)
        await bus.start()
        relay = OutboxRelay(pool, bus)
        await relay.start()
    timers = RecordingTimers()
    orchestrator = Orchestrator(
        engine=ReplayedDecisions() if job.replay else Engine(load_plans(), Policy()),
        contacts=PostgresContactStore(),
        timers=timers,
        journal=PostgresJournal(),
        outbox=TableOutbox(lambda event: to_message(event, names)),
        shops=PostgresShopDirectory(timezone="UTC"),
    )
    # As `relance serve` does once started (RELANCE_GC_THRESHOLDS).
    tune_gc(parse_thresholds(CommonSettings().gc_thresholds))
    offset = timedelta(seconds=job.offset_s)
    lateness: list[float] = []
    fired = 0
    started = time.perf_counter()
    cpu_started = time.process_time()

    async def worker() -> None:
        nonlocal fired
        async with pool.acquire() as conn:
            while True:
                handled = await orchestrator.fire_due(
                    conn, datetime.now(UTC) + offset, limit=job.batch
                )
                committed = time.time()
                due = timers.claimed.pop(id(asyncio.current_task()), [])
                if handled:
                    fired += handled
                    lateness.extend(
                        (committed - (t.due_at.timestamp() - job.offset_s)) * 1000 for t in due
                    )
                    continue
                remaining = await conn.fetchval(
                    """SELECT count(*) FROM orchestrator_timers
                       WHERE due_at <= $1::timestamptz + interval '1 hour'""",
                    datetime.now(UTC) + offset,
                )
                if remaining == 0:
                    return
                await asyncio.sleep(0.005)

    await asyncio.gather(*(worker() for _ in range(job.workers)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if relay is not None:
        await relay.stop()
    if bus is not None:
        await bus.stop()
    await pool.close()
    return {"fired": fired, "seconds": elapsed, "cpu_s": cpu, "lateness": lateness}


def _run_processes(job: ProcessJob, processes: int) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_firing_process, args=(job, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    out = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return out


def cpu_beside() -> dict[str, float]:
    """CPU seconds used so far by PostgreSQL's processes and by the Kafka broker (read from
    /proc: both run on this machine), to say where the cores went."""
    used = {"postgresql": 0.0, "kafka": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        own = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if name == "postgres":
            # + cutime, cstime: backends that exited are counted in their postmaster
            used["postgresql"] += own + (int(fields[13]) + int(fields[14])) / tick
        elif b"kafka.Kafka" in cmdline:
            used["kafka"] += own
    return used


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _kafka_answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


async def _ensure_topics(bootstrap: str) -> None:
    bus = KafkaBus(bootstrap, client_id="bench-timers", names=TopicNames("bench-timers-"))
    await bus.start()
    try:
        await bus.ensure_topics()
    finally:
        await bus.stop()


async def _prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, ("relance_runtime", "relance_orchestrator"))
    finally:
        await conn.close()


async def _phase_engine(
    dsn: str,
    templates: Sequence[Template],
    timers: int,
    kafka: str | None,
    processes: int,
    workers: int,
    batch: int,
    rate: float | None,
    replay: bool,
) -> dict[str, Any]:
    anchor = max(t.due_at for t in templates)
    conn = await asyncpg.connect(dsn)
    try:
        if rate is None:
            contacts, due = await load(conn, templates, lambda i, t: t.due_at, timers=timers)
            start_wall = None
        else:
            # due times spread from 3 s after the load, `rate` per second
            lead = 3.0
            contacts, due = await load(
                conn,
                templates,
                lambda i, t: anchor + timedelta(seconds=lead + i / rate),
                contacts_wanted=timers,
            )
            start_wall = time.time()
        loaded = await conn.fetchval("SELECT count(*) FROM orchestrator_timers")
    finally:
        await conn.close()
    if rate is None:
        offset = (anchor - datetime.now(UTC)).total_seconds() + 1.0
    else:
        assert start_wall is not None
        offset = (anchor - datetime.fromtimestamp(start_wall, UTC)).total_seconds()
    job = ProcessJob(dsn, kafka, offset, due, workers, batch, start_wall, rate, replay)
    beside_before = cpu_beside()
    outs = _run_processes(job, processes)
    beside = {k: round(v - beside_before[k], 1) for k, v in cpu_beside().items()}
    fired = sum(o["fired"] for o in outs)
    seconds = max(o["seconds"] for o in outs)
    lateness = [v for o in outs for v in o["lateness"]]
    conn = await asyncpg.connect(dsn)
    try:
        requested = await conn.fetchval(
            "SELECT count(*) FROM orchestrator_journal WHERE kind = 'requested'"
        )
        still_due = await conn.fetchval(
            "SELECT count(*) FROM orchestrator_timers WHERE due_at <= $1",
            anchor + timedelta(seconds=(due / rate + 10) if rate else 1),
        )
    finally:
        await conn.close()
    return {
        "pending_timers_loaded": loaded,
        "contacts": contacts,
        "due_timers": due,
        "fired": fired,
        "messages_requested": requested,
        "left_due": still_due,
        "seconds": round(seconds, 2),
        "fired_per_s": round(fired / seconds, 1),
        "cpu_s_per_process": [round(o["cpu_s"], 1) for o in outs],
        "cpu_s_beside": beside,
        "lateness_ms_p50": round(_pct(lateness, 0.50), 1),
        "lateness_ms_p99": round(_pct(lateness, 0.99), 1),
        "lateness_ms_max": round(max(lateness), 1) if lateness else 0.0,
        "lateness_ms_mean": round(statistics.fmean(lateness), 1) if lateness else 0.0,
    }


def run_engine(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    asyncio.run(_prepare(dsn))
    engine = Engine(load_plans(), Policy())
    shop = ShopFacts(shop_id=SHOP, timezone="UTC", average_basket=Decimal("50"))
    templates = build_templates(engine, shop, datetime(2026, 6, 1, 9, tzinfo=UTC))
    kafka = args.kafka if args.kafka and _kafka_answers(args.kafka) else None
    if kafka is not None:
        asyncio.run(_ensure_topics(kafka))
    common = (args.processes, args.workers, args.batch)
    replay = args.path == "replay"
    print(f"phase 1: {args.timers:,} pending timers, draining the due ones ...", flush=True)
    drain = asyncio.run(_phase_engine(dsn, templates, args.timers, kafka, *common, None, replay))
    print(json.dumps(drain, indent=2), flush=True)
    steady: dict[str, Any] = {}
    rates = [args.rate]
    if drain["fired_per_s"] < args.rate:
        rates.append(round(drain["fired_per_s"] * 0.8, -2))
    for rate in rates:
        n = int(rate * args.steady_seconds)
        print(f"phase 2: {n:,} timers falling due at {rate:,.0f}/s ...", flush=True)
        result = asyncio.run(_phase_engine(dsn, templates, n, kafka, *common, rate, replay))
        result["rate_per_s"] = rate
        steady[f"{rate:.0f}_per_s"] = result
        print(json.dumps(result, indent=2), flush=True)
    return {
        "path": args.path,
        "templates": {t.name: t.due_key for t in templates},
        "relay_to_kafka": kafka is not None,
        "processes": args.processes,
        "workers_per_process": args.workers,
        "batch": args.batch,
        "drain": drain,
        "steady": steady,
    }


# --- the timer store alone ------------------------------------------------------------------


async def run_store(dsn: str, n: int, workers: int, batch: int, rate: float) -> dict[str, Any]:
    await _prepare(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=workers + 1, max_size=workers + 1)
    store = PostgresTimerStore()

    async def fill(count: int, start: datetime, per_s: float | None) -> None:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE orchestrator_timers, bench_outbox")
            await conn.copy_records_to_table(
                "orchestrator_timers",
                records=(
                    (
                        SHOP,
                        f"c{i}",
                        "plan/contact",
                        start if per_s is None else start + timedelta(seconds=i / per_s),
                    )
                    for i in range(count)
                ),
                columns=["shop_id", "contact_key", "timer_key", "due_at"],
            )
            await conn.execute("ANALYZE orchestrator_timers")

    async def worker(stop_at: int, lateness: list[float]) -> int:
        fired = 0
        async with pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    due = await store.claim_due(conn, datetime.now(UTC), batch)
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
                if await conn.fetchval("SELECT count(*) FROM orchestrator_timers") == 0:
                    return fired
                if fired >= stop_at:
                    return fired
                await asyncio.sleep(0.002)

    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS bench_outbox "
            "(contact_key text, timer_key text, due_at timestamptz)"
        )
    await fill(n, datetime.now(UTC) - timedelta(seconds=1), None)
    drain: list[float] = []
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(worker(n, drain) for _ in range(workers)))
    elapsed = time.perf_counter() - t0
    steady_n = min(n, int(rate * 15))
    await fill(steady_n, datetime.now(UTC) + timedelta(seconds=2), rate)
    lateness: list[float] = []
    await asyncio.gather(*(worker(steady_n, lateness) for _ in range(workers)))
    await pool.close()
    return {
        "path": "store",
        "timers": n,
        "workers": workers,
        "batch": batch,
        "fired_per_s": round(sum(counts) / elapsed, 1),
        "steady_rate_per_s": rate,
        "lateness_ms_p50": round(_pct(lateness, 0.50), 1),
        "lateness_ms_p99": round(_pct(lateness, 0.99), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--path",
        choices=["engine", "store", "replay"],
        default="engine",
        help="engine: the service's firing path (the goal's figure); store: the timer "
        "store alone; replay: the engine path with wake-up decisions replayed, not taken "
        "(what a firing costs beside the engine)",
    )
    parser.add_argument("--timers", type=int, default=1_000_000, help="pending timers loaded")
    parser.add_argument("--processes", type=int, default=2, help="orchestrator processes")
    parser.add_argument("--workers", type=int, default=1, help="timer loops per process")
    parser.add_argument("--batch", type=int, default=500, help="timers per transaction")
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help="phase 2 timers/s")
    parser.add_argument("--steady-seconds", type=float, default=15.0)
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="broker for the relay")
    parser.add_argument("--dsn", default=None)
    args = parser.parse_args()
    server = None
    if args.dsn is None:
        import pgserver

        tmp = tempfile.mkdtemp(prefix="relance-bench-timers-")
        server = pgserver.get_server(tmp, cleanup_mode="delete")
        dsn = server.get_uri()
    else:
        dsn = args.dsn
    load_before = os.getloadavg()
    if args.path == "engine":
        result = run_engine(args, dsn)
        best = result["drain"]["fired_per_s"]
        goal = result["steady"].get(f"{args.rate:.0f}_per_s", {})
        result["goals"] = {"fired_per_s": GOAL_RATE, "lateness_ms_p99": GOAL_P99_MS}
        result["goals_met"] = best >= GOAL_RATE and goal.get("lateness_ms_p99", 1e9) < GOAL_P99_MS
    elif args.path == "replay":
        result = run_engine(args, dsn)
    else:
        result = asyncio.run(run_store(dsn, args.timers, args.workers * 2, 2000, args.rate))
    result["machine"] = {
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "beside": "PostgreSQL (pgserver) and the Kafka broker on the same 2 cores",
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = RESULTS if args.path == "engine" else RESULTS.with_name(f"timers-{args.path}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
