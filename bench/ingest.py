"""Ingest load generator: single-event req/s (p50/p99) and batched events/s on loopback.

By default it runs the real thing: a PostgreSQL from pgserver (in a temporary directory,
or `--dsn`), and `relance serve ingest` as its own process with RELANCE_BUS=kafka and
RELANCE_INGEST_WORKERS=`--workers` (2: one per core), so every 200 means acks=all on the
local broker (`make infra-up`, RELANCE_KAFKA_BOOTSTRAP). `--in-memory` instead serves the
ingest routes with a publisher that acknowledges in memory (the HTTP edge + mapping
alone). `--target` drives a server started elsewhere; pass its pid with `--server-pid` to
get its CPU too (its worker processes included).

Examples:
  uv run --frozen python bench/ingest.py                       # real Kafka, 10 s each
  uv run --frozen python bench/ingest.py --in-memory
  uv run --frozen python bench/ingest.py --target http://127.0.0.1:8000 --write-key KEY
Batches run at 8, 16 and 32 connections (`--batch-concurrency`); the best is the
headline, each is kept. Results are printed and written to bench/results/ingest.json.
The CPU of everything that works for the requests is reported: the server (all
workers), the load generator itself (it shares the 2 cores, so it stays light: raw
HTTP/1.1 on uvloop), the Kafka broker and the bench's PostgreSQL; with the load average
and the busiest other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from loadgen import RawConnection, basic_auth, post_request

RESULTS = Path(__file__).parent / "results" / "ingest.json"
DEV_KEY = "bench-write-key"
REPO = Path(__file__).resolve().parents[1]
RELANCE = REPO / ".venv" / "bin" / "relance"


def start_real_server(
    port: int, dsn: str | None, workdir: Path, workers: int
) -> tuple[subprocess.Popen[bytes], Any]:
    """`relance serve ingest` on real Kafka; returns the process and the pgserver handle."""
    pg: Any = None
    if dsn is None:
        import pgserver

        pg = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
        dsn = str(pg.get_uri())
    env = {
        **os.environ,
        "RELANCE_BUS": "kafka",
        "RELANCE_DATABASE_URL": dsn,
        "RELANCE_WRITE_KEYS": f"default:{DEV_KEY}",
        # Topics are reused between runs rather than piling up on the broker.
        "RELANCE_TOPIC_PREFIX": os.environ.get("RELANCE_TOPIC_PREFIX", "bench."),
        "RELANCE_DATA_DIR": str(workdir / "var"),
        "RELANCE_LOG_LEVEL": "WARNING",
        # The bench measures throughput, not the per-key token bucket.
        "RELANCE_INGEST_RATE_PER_S": "100000000",
        "RELANCE_INGEST_RATE_BURST": "100000000",
        "RELANCE_INGEST_WORKERS": str(workers),
    }
    server = subprocess.Popen(
        [str(RELANCE), "serve", "ingest", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    return server, pg


def wait_ready(url: str, server: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}{path} not ready after 60 s")


def machine() -> dict[str, Any]:
    """Load of the 2 shared cores (each scenario also names what else ran during it)."""
    return {"loadavg": os.getloadavg(), "cores": os.cpu_count()}


def serve(port: int) -> None:
    """The self-hosted server: ingest router, in-memory acknowledging publisher."""
    import uvicorn
    from fastapi import FastAPI

    from relance_ingest.adapters.memory_carts import InMemoryCartStore
    from relance_ingest.http.router import build_router
    from relance_ingest.http.segment import IngestFront, segment_endpoints
    from relance_ingest.settings import IngestSettings
    from relance_ingest.wiring import install_body_limits, make_deps
    from relance_runtime.auth import StaticKeyStore
    from relance_runtime.clock import SystemClock
    from relance_runtime.tokens import TokenSigner

    class CountingPublisher:
        def __init__(self) -> None:
            self.count = 0

        async def publish(self, events: Sequence[Any]) -> None:
            self.count += len(events)

        async def publish_raw(self, messages: Sequence[Any]) -> None:
            self.count += len(messages)

    settings = IngestSettings(rate_per_s=10_000_000, rate_burst=10_000_000)
    deps = make_deps(
        settings,
        publisher=CountingPublisher(),
        carts=InMemoryCartStore(),
        keys=StaticKeyStore.from_settings(f"bench:{DEV_KEY}", ""),
        signer=TokenSigner.from_setting("k1:" + "b" * 32),
        clock=SystemClock(),
    )
    app = FastAPI()
    app.include_router(build_router(deps))
    install_body_limits(app, settings)
    endpoints = segment_endpoints(deps)  # served ahead of FastAPI, as `relance serve` does
    uvicorn.run(
        IngestFront(app, lambda: endpoints),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


EVENT = os.environ.get("BENCH_EVENT", "Order Completed")


def _brief(figures: dict[str, Any]) -> dict[str, Any]:
    """One run of a sweep, in short."""
    keys = ("concurrency", "events_per_s", "p50_ms", "p99_ms", "server_cpu_s", "kafka_broker_cpu_s")
    return {k: figures[k] for k in keys if k in figures}


def _message(i: int) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": f"u{i % 5000}",  # ids vary so nothing is cached along the way
        "event": EVENT,
        "properties": {"order_id": f"o{i}", "total": 42.5, "currency": "EUR"},
        "timestamp": datetime.now(UTC).isoformat(),
    }


async def _run(
    url: str, key: str, *, batch: int, concurrency: int, duration_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    auth = basic_auth(key)
    # Built before the clock starts, so the generator's CPU goes to sending and reading.
    count = 60_000 if batch == 1 else 1_500
    if batch == 1:
        requests_pool = [
            post_request(url, "/v1/track", auth, orjson.dumps(_message(i))) for i in range(count)
        ]
    else:
        requests_pool = [
            post_request(
                url,
                "/v1/batch",
                auth,
                orjson.dumps({"batch": [_message(i * batch + j) for j in range(batch)]}),
            )
            for i in range(count)
        ]
    deadline = time.perf_counter() + duration_s

    async def worker(w: int) -> None:
        nonlocal errors
        connection = await RawConnection.open(url)
        i = w
        while time.perf_counter() < deadline:
            request = requests_pool[i % len(requests_pool)]
            i += concurrency
            started = time.perf_counter()
            status = await connection.post(request)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1
        connection.close()

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - wall
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    requests = len(latencies)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "batch_size": batch,
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "requests": requests,
        "errors": errors,
        "requests_per_s": round(requests / wall, 1),
        "events_per_s": round(requests * batch / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (requests - 1))] * 1000, 2) if latencies else None,
        "load_generator_cpu_s": round(cpu, 2),
        "load_generator_cpu_share": round(cpu / wall, 2),
    }


class _Process:
    def __init__(self, ppid: int, cpu_s: float, command: str) -> None:
        self.ppid, self.cpu_s, self.command = ppid, cpu_s, command


def _processes() -> dict[int, _Process]:
    """Every process's parent, CPU seconds so far and command line, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, _Process] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name, fields = stat[stat.find("(") + 1 : stat.rfind(")")], stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        found[int(entry.name)] = _Process(int(fields[1]), cpu, command.strip() or f"[{name}]")
    return found


def _tree(table: dict[int, _Process], roots: list[int]) -> set[int]:
    """`roots` and their descendants (the server's worker processes, PostgreSQL backends)."""
    members, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in table and pid not in members:
            members.add(pid)
            todo.extend(p for p, proc in table.items() if proc.ppid == pid)
    return members


def _groups(table: dict[int, _Process], server: int | None, workdir: Path) -> dict[str, set[int]]:
    """Who works for the requests: the server, the Kafka broker, the bench's PostgreSQL."""
    roots = {
        "server": [server] if server else [],
        "kafka_broker": [p for p, proc in table.items() if "kafka.Kafka" in proc.command],
        "postgres": [p for p, proc in table.items() if str(workdir / "pg") in proc.command],
    }
    return {name: _tree(table, pids) for name, pids in roots.items()}


def _cpu_during(
    before: dict[int, _Process], after: dict[int, _Process], groups: dict[str, set[int]]
) -> dict[str, Any]:
    """CPU seconds of each group, and of the busiest other processes, between two tables."""

    def used(pid: int) -> float:
        if pid not in after:
            return 0.0
        return after[pid].cpu_s - (before[pid].cpu_s if pid in before else 0.0)

    figures: dict[str, Any] = {
        f"{name}_cpu_s": round(sum(used(p) for p in pids), 2)
        for name, pids in groups.items()
        if pids
    }
    if groups.get("server"):
        # SO_REUSEPORT spreads connections by a hash: with few connections, one worker
        # may get most of them (and of the CPU) while the other idles.
        figures["server_cpu_s_by_process"] = sorted(
            (round(used(p), 2) for p in groups["server"]), reverse=True
        )
    known = set().union(*groups.values()) | {os.getpid()}
    others = sorted(((used(p), after[p].command) for p in after if p not in known), reverse=True)
    figures["other_processes_cpu_s"] = round(sum(cpu for cpu, _ in others), 2)
    figures["busiest_other_processes"] = [
        f"{cpu:.2f} s {command[:90]}" for cpu, command in others[:5] if cpu >= 0.05
    ]
    return figures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--target", help="ingest base URL; default: start a local server")
    parser.add_argument("--in-memory", action="store_true", help="in-memory bus, no Kafka")
    parser.add_argument("--dsn", help="PostgreSQL for the real server (default: pgserver)")
    parser.add_argument("--write-key", default=DEV_KEY, help="write key for --target")
    parser.add_argument("--server-pid", type=int, help="pid of --target, to report its CPU")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--concurrency", type=int, default=32, help="connections, single events")
    parser.add_argument(
        "--batch-concurrency",
        default="8,16,32",
        help="connections for batches, comma-separated: each is a run, and the best is the\n"
        "headline (throughput is measured where the server is saturated; fewer\n"
        "connections leave its group commits waiting on the bus, the machine part idle)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--workers", type=int, default=2, help="RELANCE_INGEST_WORKERS of the local server"
    )
    parser.add_argument(
        "--scenarios", default="single,batched", help="which to run (e.g. to profile one)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    server: subprocess.Popen[bytes] | None = None
    pg: Any = None
    workdir = Path(tempfile.mkdtemp(prefix="relance-bench-"))
    url, pid = args.target, args.server_pid
    mode = "target" if url else ("in-memory" if args.in_memory else "kafka")
    if url is None:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        if args.in_memory:
            server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
            wait_ready(url, server, "/docs")
        else:
            server, pg = start_real_server(port, args.dsn, workdir, args.workers)
            wait_ready(url, server, "/readyz")
        pid = server.pid
    try:
        results: dict[str, Any] = {
            "target": url,
            "mode": mode,
            "workers": args.workers if mode == "kafka" else None,
            "event": EVENT,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine_before": machine(),
        }
        runs = [("single", 1, args.concurrency)] + [
            ("batched", args.batch_size, int(c)) for c in str(args.batch_concurrency).split(",")
        ]
        sweep: list[dict[str, Any]] = []
        for name, batch, conc in runs:
            if name not in args.scenarios.split(","):
                continue
            before = _processes()
            groups = _groups(before, pid, workdir)
            # uvloop: the generator shares the cores with the server, so it must stay light.
            figures = uvloop.run(
                _run(url, args.write_key, batch=batch, concurrency=conc, duration_s=args.duration)
            )
            figures.update(_cpu_during(before, _processes(), groups))
            for group in ("server", "kafka_broker", "postgres"):
                if f"{group}_cpu_s" in figures:
                    figures[f"{group}_cpu_us_per_request"] = round(
                        figures[f"{group}_cpu_s"] / max(1, figures["requests"]) * 1e6, 1
                    )
            figures["server_processes"] = len(groups["server"])
            if name == "batched":
                sweep.append(figures)
                best = max(sweep, key=lambda f: f["events_per_s"])
                results[name] = {**best, "by_concurrency": [_brief(f) for f in sweep]}
            else:
                results[name] = figures
            print(
                f"{name:8} x{conc:<3} {figures['requests_per_s']:>9} req/s"
                f" {figures['events_per_s']:>10}"
                f" events/s  p50 {figures['p50_ms']} ms  p99 {figures['p99_ms']} ms"
                f"  errors {figures['errors']}"
                f"  load-generator CPU {figures['load_generator_cpu_s']}"
                f" s ({figures['load_generator_cpu_share']:.0%} of a core)"
                + "".join(
                    f"  {group} CPU {figures[f'{group}_cpu_s']} s"
                    for group in ("server", "kafka_broker", "postgres")
                    if f"{group}_cpu_s" in figures
                )
                + f"  others {figures['other_processes_cpu_s']} s"
            )
        results["machine_after"] = machine()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {args.output}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
