"""A consumer process for the crash tests: applies events to `test_effects` through the inbox.

Run: python killable_worker.py BUS DSN BOOTSTRAP PREFIX GROUP. It prints "started" once its
consumer loop runs. Each batch is applied in ONE transaction: inbox claim + effect rows. A
slow step inside the transaction widens the window in which a SIGKILL lands mid-batch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import asyncpg

from relance_events.topics import DEAD_LETTERS, EVENTS
from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.messages import TopicNames
from relance_runtime.bus.ports import Bus
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.consumer import ConsumerLoop, Delivery
from relance_runtime.inbox import claim_new


async def main(bus_kind: str, dsn: str, bootstrap: str, prefix: str, group: str) -> None:
    names = TopicNames(prefix)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    bus: Bus
    if bus_kind == "kafka":
        bus = KafkaBus(bootstrap, names=names, session_timeout_ms=6_000)
    else:
        bus = PostgresLogBus(pool, dsn, names=names, session_timeout_s=2.0, heartbeat_s=0.2)
    await bus.start()

    async def apply(deliveries: Sequence[Delivery]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            new = await claim_new(conn, group, [d.event.event_id for d in deliveries])
            await conn.executemany(
                "INSERT INTO test_effects (event_id, pid) VALUES ($1, $2)",
                [(d.event.event_id, os.getpid()) for d in deliveries if d.event.event_id in new],
            )
            await asyncio.sleep(0.03)

    loop = ConsumerLoop(
        bus,
        group=group,
        topics=[names.of(EVENTS)],
        handler=apply,
        dead_letter_topic=names.of(DEAD_LETTERS),
        batch_size=100,
        poll_timeout_s=0.2,
    )
    await loop.start()
    print("started", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await loop.stop()
    await bus.stop()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
