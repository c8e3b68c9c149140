"""`ops` wired on each durable bus: real Kafka, and the PostgreSQL log."""

from __future__ import annotations

import pytest

from relance_runtime.bus.ports import Bus
from relance_runtime.ops import Ops


@pytest.fixture(params=["kafka", "postgres"])
def ops_bus(request: pytest.FixtureRequest) -> tuple[Ops, Bus]:
    pool = request.getfixturevalue("pool")
    if request.param == "kafka":
        bus = request.getfixturevalue("kafka_bus")
        return (
            Ops.on_kafka(pool, bus.names, request.getfixturevalue("kafka_bootstrap"), bus),
            bus,
        )
    pg = request.getfixturevalue("pg_bus")
    return Ops.on_postgres(pool, pg), pg
