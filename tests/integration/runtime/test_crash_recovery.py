"""SIGKILL a consumer process mid-batch, restart it: every event applied exactly once.

Oracle: `test_effects` has no unique constraint, so an event applied twice would show as
two rows; the inbox claim in the same transaction as the effect is what prevents it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from relance_runtime.bus.ports import Bus

from .busutil import numbered_event

WORKER = Path(__file__).with_name("killable_worker.py")
TOTAL = 3000
KILLS = 3

pytestmark = pytest.mark.timeout(240)


async def _effects(pool: asyncpg.Pool) -> tuple[int, int]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM test_effects"
        )
    assert row is not None
    return int(row["n"]), int(row["d"])


async def _start_worker(args: list[str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    assert line.strip() == b"started", line
    return proc


async def test_sigkill_mid_batch_loses_nothing_and_applies_nothing_twice(
    durable_bus: Bus,
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
) -> None:
    bus = durable_bus
    bus_kind = "kafka" if type(bus).__name__ == "KafkaBus" else "postgres"
    names = bus.names  # type: ignore[attr-defined]
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE test_effects (event_id uuid NOT NULL, pid int NOT NULL)")
    events = [numbered_event(f"c{i % 50}", i) for i in range(TOTAL)]
    for start in range(0, TOTAL, 250):
        await bus.publish(events[start : start + 250])

    args = [bus_kind, database_url, kafka_bootstrap, names.prefix, f"crash-{uuid.uuid4().hex[:6]}"]
    loop = asyncio.get_running_loop()
    kills = 0
    while kills < KILLS:
        worker = await _start_worker(args)
        before, _ = await _effects(pool)
        deadline = loop.time() + 60
        # Kill once this incarnation made progress, at a moment it is likely mid-batch.
        while (await _effects(pool))[0] < before + 200 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        kills += 1
        applied, _ = await _effects(pool)
        assert applied < TOTAL, "the worker finished before it could be killed; raise TOTAL"

    worker = await _start_worker(args)
    deadline = loop.time() + 120
    while (await _effects(pool))[1] < TOTAL and loop.time() < deadline:
        await asyncio.sleep(0.1)
    worker.send_signal(signal.SIGTERM)  # graceful: finish the batch, commit, leave the group
    assert await asyncio.wait_for(worker.wait(), timeout=30) == 0

    rows, distinct = await _effects(pool)
    assert distinct == TOTAL, f"{TOTAL - distinct} events were lost"
    assert rows == TOTAL, f"{rows - TOTAL} events were applied twice"
    async with pool.acquire() as conn:
        stored = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM test_effects")}
    assert stored == {e.event_id for e in events}
