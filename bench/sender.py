"""Sender throughput: render + track + DKIM + SMTP to a local sink, through the consumer path.

    uv run --frozen python bench/sender.py [--messages 6000] [--processes 1,2]
        [--ledger memory,postgres] [--concurrency 8] [--claim-batch 16] [--pool 8]
        [--sink lean,aiosmtpd] [--no-dkim] [--no-pipelining] [--loop uvloop|asyncio]

Each sender process is wired like the service (`wiring.build_sender`: settings, the SMTP
transport behind its rate limiters, DKIM RSA-2048 from a key file, OpenTelemetry counters)
and fed like it: encoded `message.requested` records are decoded and handed, in batches of
the consumer's size, to the service's own batch handler (`SenderHandler`, one span per
send). Only the bus is replaced: nothing polls Kafka and status events go nowhere.

The SMTP sink runs in a child process and accepts everything; like Postfix it offers
PIPELINING unless --no-pipelining. Every run is done with `bench/smtp_sink.py`, a lean
asyncio server (a real MTA runs on another machine; this one takes a tenth of the CPU
aiosmtpd takes), then with aiosmtpd; the sink's CPU is reported for each. The ledger is
the in-memory store, then PostgreSQL (a throwaway embedded pgserver), so ops see the real
cost. `--processes N` runs N sender processes side by side (one consumer-group member
each) and reports their combined rate.
Every sender warms up (connections, templates) before the timed run. The machine is
shared: the load average before each run and the processes that used CPU beside it (the
sink, PostgreSQL, anything else) are printed and written to bench/results/sender.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, cast

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from relance_events import decode, encode, new_event
from relance_events.payloads import MessageRequested
from relance_runtime.bus.ports import Record
from relance_runtime.clock import SystemClock
from relance_runtime.consumer import Delivery
from relance_runtime.db import migrate
from relance_runtime.platform import Platform
from relance_runtime.tokens import TokenSigner
from relance_sender.adapters.memory_store import MemorySenderStore
from relance_sender.adapters.otel_metrics import SENDER_METER, OtelSenderMetrics
from relance_sender.adapters.postgres_ledger import PostgresSenderStore
from relance_sender.adapters.smtp import DEFAULT_POOL
from relance_sender.bootstrap import SenderHandler
from relance_sender.domain.request import SendRequest
from relance_sender.email_message import DkimKey, EmailBuilder, SenderIdentity
from relance_sender.ports import SenderStore
from relance_sender.rendering.renderer import Renderer
from relance_sender.settings import SenderSettings
from relance_sender.wiring import build_sender, shop_profile

RESULTS = Path(__file__).resolve().parent / "results" / "sender.json"
GOAL_PER_S = 1000
BATCH = 500  # RELANCE_CONSUMER_BATCH_SIZE's default
WARMUP = 200
TOKEN_KEYS = "k1:0123456789abcdef0123"


# --- the SMTP sink (child process) -------------------------------------------------------


class Sink:
    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:  # aiosmtpd reads commands in order; it only does not say so
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: queued"


def run_sink(port: int, pipelining: bool, kind: str) -> None:
    if kind == "lean":
        from smtp_sink import run

        run(port, pipelining)
        return
    from aiosmtpd.controller import Controller

    controller = Controller(Sink(pipelining), hostname="127.0.0.1", port=port)
    controller.start()
    while True:
        time.sleep(3600)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- what ran beside the measurement ----------------------------------------------------


Proc = tuple[str, int, float]  # name, parent pid, CPU seconds (its own + reaped children's)


def processes_now() -> dict[int, Proc]:
    """Every process on the machine, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # utime + stime + cutime + cstime: PostgreSQL's postmaster reaps its backends.
        cpu = sum(int(f) for f in fields[11:15]) / tick
        found[int(entry.name)] = (name, int(fields[1]), cpu)
    return found


def beside(
    before: dict[int, Proc], after: dict[int, Proc], roles: dict[int, str]
) -> list[dict[str, Any]]:
    """Processes that used CPU during the run (>= 0.05 s), busiest first, with their role;
    a process whose parent has a role (PostgreSQL's backends) shares it."""
    used = []
    for pid, (name, parent, seconds) in after.items():
        role = roles.get(pid) or roles.get(parent)
        spent = seconds - before.get(pid, (name, parent, 0.0))[2]
        if spent >= 0.05 or pid in roles:
            used.append(
                {"pid": pid, "name": name, "role": role or "other", "cpu_s": round(spent, 2)}
            )
    return sorted(used, key=lambda p: -cast(float, p["cpu_s"]))


# --- one sender process -------------------------------------------------------------------


def settings_for(port: int, key_file: Path | None, args: argparse.Namespace) -> SenderSettings:
    dkim: dict[str, Any] = {}
    if key_file is not None:
        dkim = {
            "dkim_selector": "s1",
            "dkim_domain": "shop.example",
            "dkim_private_key_file": key_file,
        }
    return SenderSettings(
        smtp_url=f"smtp://127.0.0.1:{port}" + (f"?pool={args.pool}" if args.pool else ""),
        public_url="https://relance.example",
        token_keys=TOKEN_KEYS,
        marketing_from="Maison Dupont <news@shop.example>",
        transactional_from="Maison Dupont <commandes@shop.example>",
        message_id_domain="mail.shop.example",
        shop_name="Maison Dupont",
        shop_url="https://shop.example",
        shop_support_url="https://shop.example/aide",
        shop_review_url="https://shop.example/avis",
        shop_postal_address="1 rue de la Paix, Paris",
        shop_social="Instagram=https://instagram.com/md",
        # The default (500/s) protects a real provider; the sink takes anything.
        rate_limits={"email": 1_000_000.0},
        concurrency=args.concurrency,
        instance=f"bench-{os.getpid()}",
        **dkim,
    )


def context(n: int) -> dict[str, Any]:
    return {
        "contact": {"email": f"contact{n}@example.org", "first_name": "Zoé"},
        "cart": {
            "items": [
                {"name": "Pull en laine", "quantity": 2, "price": "49.90"},
                {"name": "Bonnet", "quantity": 1, "price": "19.00"},
            ],
            "total": "118.80",
            "currency": "EUR",
            "url": "https://shop.example/cart",
            "clear_at": "2025-03-05T10:00:00Z",
        },
    }


def requested(run: str, n: int) -> MessageRequested:
    return MessageRequested(
        message_id=f"bench-{run}-{n}",
        plan="abandoned_cart",
        step="reminder_2",
        plan_instance=f"pi-{run}-{n}",
        channel="email",
        purpose="marketing",
        locale="fr",
        context=context(n),
    )


def records(run: str, first: int, count: int) -> list[Record]:
    """`message.requested` as the consumer reads them: encoded bytes on a partition."""
    now = datetime.now(UTC)
    out = []
    for n in range(first, first + count):
        event = new_event(
            requested(run, n),
            shop_id="shop-1",
            contact_key=f"u-{n}",
            source="orchestrator",
            occurred_at=now,
        )
        out.append(Record("message-requests", n % 12, n, event.partition_key, encode(event)))
    return out


async def consume(handler: SenderHandler, batch: list[Record]) -> None:
    for start in range(0, len(batch), BATCH):
        chunk = batch[start : start + BATCH]
        await handler([Delivery(record, decode(record.value)) for record in chunk])


def sent_count(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    return sum(
        int(point.value)  # type: ignore[union-attr]
        for resource in (data.resource_metrics if data else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "relance.sender.sent"
        for point in metric.data.data_points
    )


class NullBus:
    async def publish(self, events: Any) -> None:
        return None

    async def publish_raw(self, messages: Any) -> None:
        return None


async def sender_run(
    port: int,
    key_file: Path | None,
    dsn: str | None,
    run: str,
    first: int,
    count: int,
    args: argparse.Namespace,
    barrier: Barrier | None,
) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=20) if dsn else None
    store: SenderStore = PostgresSenderStore(pool) if pool else MemorySenderStore()
    reader = InMemoryMetricReader()  # read once at the end: checks every message was sent
    meters = MeterProvider(metric_readers=[reader])
    sender = build_sender(
        settings_for(port, key_file, args),
        store=store,
        publisher=NullBus(),
        clock=SystemClock(),
        signer=TokenSigner.from_setting(TOKEN_KEYS),
        metrics=OtelSenderMetrics(meters.get_meter(SENDER_METER)),
    )
    # Message requests never reach the platform (only consent changes use its pool).
    assert sender.email_transport.name == "smtp", "the bench must send over SMTP"
    handler = SenderHandler(
        cast(Platform, None), sender, concurrency=args.concurrency, claim_batch=args.claim_batch
    )
    await consume(handler, records(f"{run}w", first, WARMUP))
    batch = records(run, first, count)
    if barrier is not None:
        await asyncio.to_thread(barrier.wait)
    cpu0, started = time.process_time(), time.time()
    await consume(handler, batch)
    ended, cpu = time.time(), time.process_time() - cpu0
    await sender.close()
    if pool is not None:
        await pool.close()
    sent = sent_count(reader) - WARMUP
    assert sent == count, f"{sent} of {count} sent"
    return {"count": count, "started": started, "ended": ended, "cpu_s": cpu, "pid": os.getpid()}


def run_loop(loop: str, coro: Any) -> Any:
    """The service runs under uvicorn, whose default loop is uvloop when installed."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def _child(
    port: int,
    key_file: Path | None,
    dsn: str | None,
    run: str,
    first: int,
    count: int,
    args: argparse.Namespace,
    barrier: Barrier,
    out: Any,
) -> None:
    result = run_loop(args.loop, sender_run(port, key_file, dsn, run, first, count, args, barrier))
    out.put(result)


def measure(
    port: int,
    key_file: Path | None,
    dsn: str | None,
    args: argparse.Namespace,
    processes: int,
    roles: dict[int, str],
) -> dict[str, Any]:
    """One timed run: `processes` senders share the messages; their combined rate."""
    run = f"{processes}p{int(time.time() * 1000)}"
    share = args.messages // processes
    load = [round(x, 2) for x in os.getloadavg()]
    before = processes_now()
    if processes == 1:
        results = [run_loop(args.loop, sender_run(port, key_file, dsn, run, 0, share, args, None))]
    else:
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        barrier = ctx.Barrier(processes)
        workers = [
            ctx.Process(
                target=_child, args=(port, key_file, dsn, run, i * share, share, args, barrier, out)
            )
            for i in range(processes)
        ]
        for worker in workers:
            worker.start()
        results = [out.get() for _ in workers]
        for worker in workers:
            worker.join()
    if dsn:
        time.sleep(0.3)  # the postmaster reaps the closed pool's backends (their CPU)
    after = processes_now()
    # Senders report their own CPU over the timed run (forked ones are gone by now).
    after = {pid: p for pid, p in after.items() if pid != os.getpid()}
    senders = [
        {"pid": r["pid"], "name": "python", "role": "sender", "cpu_s": round(r["cpu_s"], 2)}
        for r in results
    ]
    total = sum(r["count"] for r in results)
    elapsed = max(r["ended"] for r in results) - min(r["started"] for r in results)
    others = beside(before, after, roles)
    sink_s = sum(p["cpu_s"] for p in others if p["role"].startswith("smtp sink"))
    return {
        "ledger": "postgres" if dsn else "memory",
        "processes": processes,
        "messages": total,
        "end_to_end_per_s": round(total / elapsed, 1),
        "sender_cpu_ms_per_message": round(sum(r["cpu_s"] for r in results) / total * 1000, 3),
        "sink_cpu_ms_per_message": round(sink_s / total * 1000, 3),
        "load_average_before": load,
        "beside": senders + others[:8],
    }


# --- setup --------------------------------------------------------------------------------


def write_key(folder: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


def build_only(key_file: Path | None, count: int) -> float:
    """Messages built per second (render, links, MIME, DKIM) in one core, no I/O."""
    settings = settings_for(0, None, argparse.Namespace(pool=None, concurrency=1))
    dkim = None
    if key_file is not None:
        dkim = DkimKey("s1", "shop.example", key_file.read_bytes())
    emails = EmailBuilder(
        renderer=Renderer(shop=shop_profile(settings)),
        signer=TokenSigner.from_setting(TOKEN_KEYS),
        public_url=settings.public_url,
        identity=SenderIdentity(
            marketing_from=settings.marketing_from,
            transactional_from=settings.transactional_from,
            message_id_domain=settings.message_id_domain,
        ),
        dkim_key=dkim,
    )
    now = datetime.now(UTC)
    batch = [
        SendRequest.from_json(
            {
                "shop_id": "shop-1",
                "contact_key": f"u-{n}",
                **requested("b", n).model_dump(mode="json"),
            }
        )
        for n in range(count)
    ]
    start = time.perf_counter()
    for request in batch:
        emails.build(request, to=request.contact["email"], now=now)
    return count / (time.perf_counter() - start)


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[tuple[str, list[int]]]:
    """A throwaway embedded PostgreSQL with every migration; its DSN and server pids."""
    import pgserver

    server = pgserver.get_server(str(folder / "pg"), cleanup_mode="stop")
    dsn = str(server.get_uri())

    async def prepare() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    postmaster = int((folder / "pg" / "postmaster.pid").read_text().split()[0])
    try:
        yield dsn, [postmaster]
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--processes", default="1,2", help="comma-separated, e.g. 1,2")
    parser.add_argument("--ledger", default="memory,postgres", help="memory, postgres or both")
    parser.add_argument("--concurrency", type=int, default=SenderSettings().concurrency)
    parser.add_argument(
        "--claim-batch",
        type=int,
        default=SenderSettings().claim_batch,
        help="message requests claimed per ledger transaction",
    )
    parser.add_argument(
        "--sink",
        default="lean,aiosmtpd",
        help="the SMTP servers to send to, comma-separated: lean (bench/smtp_sink.py), aiosmtpd",
    )
    parser.add_argument("--pool", type=int, help="SMTP sessions per process (default: the URL's)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--no-dkim", action="store_true")
    parser.add_argument("--no-pipelining", action="store_true", help="the sink hides PIPELINING")
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]
    ledgers = args.ledger.split(",")

    sinks = args.sink.split(",")
    figures: dict[str, Any] = {
        "goal_per_s": GOAL_PER_S,
        "cores": os.cpu_count(),
        "dkim": not args.no_dkim,
        "loop": args.loop,
        "sinks": {"servers": sinks, "pipelining": not args.no_pipelining},
        "concurrency": args.concurrency,
        "claim_batch": args.claim_batch,
        "smtp_pool": args.pool or DEFAULT_POOL,
        "consumer_batch": BATCH,
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="relance-bench-sender-") as tmp:
        key_file = None if args.no_dkim else write_key(Path(tmp))
        figures["build_per_s_no_dkim"] = round(build_only(None, 2000), 1)
        if key_file is not None:
            figures["build_per_s_dkim"] = round(build_only(key_file, 1000), 1)
        with contextlib.ExitStack() as stack:
            dsn, pids = "", list[int]()
            if "postgres" in ledgers:
                dsn, pids = stack.enter_context(postgres(Path(tmp)))
            for kind in sinks:
                port = free_port()
                sink = multiprocessing.get_context("fork").Process(
                    target=run_sink, args=(port, not args.no_pipelining, kind), daemon=True
                )
                sink.start()
                time.sleep(1.0)
                roles = {sink.pid or 0: f"smtp sink ({kind})"}
                pg_roles = {**roles, **{pid: "postgresql (ledger)" for pid in pids}}
                try:
                    for ledger in ledgers:
                        for n in counts:
                            run = measure(
                                port,
                                key_file,
                                dsn if ledger == "postgres" else None,
                                args,
                                n,
                                pg_roles if ledger == "postgres" else roles,
                            )
                            runs.append({"sink": kind, **run})
                finally:
                    sink.terminate()
                    sink.join()
    figures["runs"] = runs
    figures["at"] = datetime.now(UTC).isoformat()
    report(figures)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


def report(figures: dict[str, Any]) -> None:
    for key, value in figures.items():
        if key != "runs":
            print(f"{key:>22}: {value}")
    for run in figures["runs"]:
        print(
            f"\n{run['ledger']} ledger, {run['processes']} sender process(es), "
            f"{run['sink']} sink: "
            f"{run['end_to_end_per_s']} emails/s ({run['messages']} messages, "
            f"{run['sender_cpu_ms_per_message']} ms sender CPU each, "
            f"load average before {run['load_average_before']})"
        )
        print("  beside the measurement (CPU seconds during the run, reaped children included):")
        for proc in run["beside"]:
            print(
                f"    {proc['cpu_s']:>7} s  {proc['role']:<22} {proc['name']} (pid {proc['pid']})"
            )


if __name__ == "__main__":
    main()
