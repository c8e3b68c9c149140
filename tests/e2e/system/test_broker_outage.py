"""Must-hold 4: the broker stops for 30 s during ingest. On a broker of its own
(`deploy/kafka/kafka.sh` with `RELANCE_KAFKA_HOME`/`RELANCE_KAFKA_PORT`), so the shared
broker on :9092 is never stopped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import clone_database, drop_database
from .harness import REPO, System, event_ids, free_port, identify, post_batch

KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"
OUTAGE_S = 30.0
pytestmark = pytest.mark.timeout(420)


def kafka(command: str, env: dict[str, str]) -> None:
    subprocess.run(["bash", str(KAFKA_SH), command], env=env, check=True, capture_output=True)


@pytest.fixture
async def outage_system(
    tmp_path: Path, pg_root_dsn: str, pg_template: str
) -> AsyncIterator[tuple[System, dict[str, str]]]:
    port = free_port()
    env = {
        **os.environ,
        "RELANCE_KAFKA_HOME": str(tmp_path / "kafka"),
        "RELANCE_KAFKA_PORT": str(port),
    }
    await asyncio.to_thread(kafka, "up", env)
    dsn = await clone_database(pg_root_dsn, pg_template)
    system = System(
        tmp_path,
        dsn,
        f"127.0.0.1:{port}",
        f"out{uuid.uuid4().hex[:8]}.",
        layout={"ingest": 1, "segmentation": 1, "orchestrator": 1, "sender": 1, "feedback": 1},
    )
    try:
        await asyncio.to_thread(system.start)
        yield system, env
    finally:
        await asyncio.to_thread(system.stop)
        await asyncio.to_thread(
            subprocess.run, ["bash", str(KAFKA_SH), "down"], env=env, capture_output=True
        )
        await drop_database(pg_root_dsn, dsn)


async def test_broker_stopped_30s_during_ingest(
    outage_system: tuple[System, dict[str, str]],
) -> None:
    """Stopped: the whole broker (kafka.sh down) for 30 s while a client posts one batch of
    10 identifies every 100 ms, never retrying (each batch has its own messageIds). Oracle:
    every batch answered 2xx has all its event ids in `runtime_inbox` for segmentation
    and orchestrator once the broker is back (nothing acknowledged lost); batches answered
    503 carry Retry-After; no process exited and each is ready again without a restart
    (recovered on their own); and no 2xx was given for an event the broker did not take:
    each 2xx event is in the inbox, and a 2xx while the broker was down fails the test."""
    system, env = outage_system
    accepted: list[list[dict[str, Any]]] = []
    refused = 0
    down_from = up_at = 0.0
    stop = asyncio.Event()
    accepted_while_down: list[float] = []

    async def client() -> None:
        nonlocal refused
        async with httpx.AsyncClient(timeout=60) as http:
            n = 0
            while not stop.is_set():
                # identifies: both consumers apply them, so each is in both inboxes
                batch = [
                    identify(f"u-out-{n % 50}", {"first_name": f"N{n}-{i}"}, system.now())
                    for i in range(10)
                ]
                n += 1
                sent_at = time.monotonic()
                try:
                    response = await post_batch(http, system.ingest_url, batch)
                except httpx.HTTPError:
                    continue
                received = time.monotonic()
                if response.status_code == 200:
                    accepted.append(batch)
                    # 2xx answered after `kafka.sh up` started may be the restarted broker's
                    # acks (the inbox oracle below checks those); before it, none may exist.
                    if down_from and sent_at > down_from + 1.0 and (not up_at or received < up_at):
                        accepted_while_down.append(sent_at - down_from)
                else:
                    assert response.status_code == 503, response.text
                    assert int(response.headers["retry-after"]) >= 1
                    refused += 1
                await asyncio.sleep(0.1)

    task = asyncio.create_task(client())
    await asyncio.sleep(3.0)
    before = len(accepted)
    assert before > 0, "nothing accepted before the outage"
    await asyncio.to_thread(kafka, "down", env)
    down_from = time.monotonic()
    await asyncio.sleep(OUTAGE_S)
    up_at = time.monotonic()
    await asyncio.to_thread(kafka, "up", env)
    await asyncio.sleep(15.0)
    stop.set()
    await task
    assert refused > 0, "no 503 while the broker was down"
    assert accepted_while_down == [], accepted_while_down

    ids = [i for batch in accepted for ids in event_ids(batch).values() for i in ids]
    for consumer in ("segmentation", "orchestrator"):
        await system.wait_until(
            "SELECT count(*) FROM runtime_inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
            consumer,
            ids,
            expect=len(ids),
            timeout_s=120,
            what=f"{consumer} applied every acknowledged event",
        )
    assert len(accepted) > before, "ingest never accepted again after the outage"
    assert [p.name for p in system.procs if not p.alive] == []
    deadline = time.monotonic() + 60
    while not all(system.ready(p) for p in system.procs):
        if time.monotonic() > deadline:
            waiting = {p.name: system.readiness(p) for p in system.procs if not system.ready(p)}
            raise AssertionError(f"a service did not recover on its own: {waiting}")
        await asyncio.sleep(1.0)
