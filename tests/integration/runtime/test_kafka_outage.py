"""The producer when the broker is away: a clear error, nothing reported as accepted, no
busy loop while it waits for the broker to come back, and a stop that does not wait for
it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from relance_events.topics import EVENTS
from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.messages import TopicNames
from relance_runtime.errors import BusUnavailable

from .busutil import numbered_event, poll_until, seq_of

KAFKA_SH = Path(__file__).resolve().parents[3] / "deploy" / "kafka" / "kafka.sh"
pytestmark = pytest.mark.timeout(240)


async def test_an_unreachable_broker_is_a_clear_error() -> None:
    bus = KafkaBus("127.0.0.1:1", request_timeout_ms=2000)
    with pytest.raises(BusUnavailable, match="unreachable"):
        await bus.start()
    with pytest.raises(BusUnavailable):
        await bus.publish([numbered_event("c", 1)])


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A second broker this test may stop, so the shared one is never disturbed."""
    env = {
        **os.environ,
        "RELANCE_KAFKA_HOME": str(tmp_path / "kafka"),
        "RELANCE_KAFKA_PORT": "29092",
    }
    subprocess.run(["bash", str(KAFKA_SH), "up"], env=env, check=True, capture_output=True)
    yield "127.0.0.1:29092", env
    subprocess.run(["bash", str(KAFKA_SH), "down"], env=env, check=False, capture_output=True)


async def test_publishes_fail_while_the_broker_is_down_and_recover_after(
    own_broker: tuple[str, dict[str, str]],
) -> None:
    bootstrap, env = own_broker
    names = TopicNames(prefix=f"t{uuid.uuid4().hex[:8]}.")
    bus = KafkaBus(bootstrap, names=names, request_timeout_ms=3000, delivery_timeout_s=8)
    await bus.start()
    await bus.ensure_topics()
    before = [numbered_event("c1", i) for i in range(10)]
    await bus.publish(before)
    assert await bus.ping()

    await asyncio.to_thread(subprocess.run, ["bash", str(KAFKA_SH), "down"], env=env, check=True)
    during = [numbered_event("c1", i) for i in range(10, 20)]
    with pytest.raises(BusUnavailable):
        await bus.publish(during)
    assert not await bus.ping(), "readiness must fail while produces fail"

    await asyncio.to_thread(subprocess.run, ["bash", str(KAFKA_SH), "up"], env=env, check=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    # Readiness comes back without a publish: a process with nothing to send is ready too.
    while not await bus.ping():
        assert loop.time() < deadline, "readiness never came back without a publish"
        await asyncio.sleep(1)
    after = [numbered_event("c1", i) for i in range(20, 30)]
    while True:  # the caller's retry (ingest answers 503 meanwhile)
        try:
            await bus.publish(after)
            break
        except BusUnavailable:
            assert loop.time() < deadline, "the producer never recovered"
            await asyncio.sleep(1)
    assert await bus.ping()

    consumer = bus.consumer("outage", [names.of(EVENTS)])
    await consumer.start()
    try:
        records = await poll_until(consumer, 20, timeout_s=60)
    finally:
        await consumer.stop()
        await bus.stop()
    seqs = {seq_of(r)[1] for r in records}
    assert set(range(10)) <= seqs, "an acknowledged event was lost"
    assert set(range(20, 30)) <= seqs, "an acknowledged event was lost"


async def test_a_producer_waits_for_the_broker_without_spinning(
    own_broker: tuple[str, dict[str, str]],
) -> None:
    """aiokafka asked for metadata again as soon as an update failed, and a refused
    connection fails at once: a producer spun a core (thousands of updates a second)
    for as long as the broker was away."""
    bootstrap, env = own_broker
    bus = KafkaBus(
        bootstrap,
        names=TopicNames(prefix=f"t{uuid.uuid4().hex[:8]}."),
        request_timeout_ms=3000,
        delivery_timeout_s=8,
    )
    await bus.ensure_topics()
    await bus.start()
    await bus.publish([numbered_event("c1", 0)])

    async def keep_publishing() -> None:  # as requests keep coming to ingest
        n = 1
        while True:
            with contextlib.suppress(BusUnavailable):
                await bus.publish([numbered_event("c1", n)])
            n += 1
            await asyncio.sleep(0.1)

    failed_updates = _Counting("Unable to update metadata")
    logging.getLogger("aiokafka").addHandler(failed_updates)
    traffic = asyncio.create_task(keep_publishing())
    try:
        down = ["bash", str(KAFKA_SH), "down"]
        await asyncio.to_thread(subprocess.run, down, env=env, check=True)
        loop = asyncio.get_running_loop()
        since, before = loop.time(), failed_updates.count
        await asyncio.sleep(4)
        per_second = (failed_updates.count - before) / (loop.time() - since)
    finally:
        logging.getLogger("aiokafka").removeHandler(failed_updates)
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        # aiokafka's own stop waits for every unsent batch, for ever with the broker down.
        stopping = asyncio.get_running_loop().time()
        await bus.stop()
        stop_s = asyncio.get_running_loop().time() - stopping
    assert per_second < 50, f"{per_second:.0f} failed metadata updates a second"
    assert stop_s < 8 + 2, f"stopping took {stop_s:.1f} s"


class _Counting(logging.Handler):
    """Counts the log records whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.DEBUG)
        self.prefix = prefix
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.count += 1
