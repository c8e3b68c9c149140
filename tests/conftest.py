"""Shared fixtures: real PostgreSQL (pgserver or RELANCE_TEST_DATABASE_URL) and real Kafka.

Isolation per test: each test gets a fresh database cloned from a migrated template
(`CREATE DATABASE ... TEMPLATE`), and a unique topic/consumer-group prefix on the broker.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.memory import InMemoryBus
from relance_runtime.bus.messages import TopicNames
from relance_runtime.bus.ports import Bus
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.db import migrate
from relance_runtime.platform import Platform, start_platform
from relance_runtime.settings import CommonSettings

REPO = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


def dsn_with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_root_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("RELANCE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import pgserver

    server = pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    yield str(server.get_uri())
    server.cleanup()


@pytest.fixture(scope="session")
async def pg_template(pg_root_dsn: str) -> str:
    """A database with every migration applied, cloned per test."""
    name = f"relance_tpl_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_root_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn_with_database(pg_root_dsn, name))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return name


@pytest.fixture
async def database_url(pg_root_dsn: str, pg_template: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_root_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    finally:
        await admin.close()
    yield dsn_with_database(pg_root_dsn, name)
    admin = await asyncpg.connect(pg_root_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    assert created is not None
    yield created
    await created.close()


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker of `make infra-up`; started here if a developer runs pytest directly."""
    bootstrap = os.environ.get("RELANCE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    if not _port_open(host, int(port)):
        subprocess.run(["bash", str(REPO / "deploy/kafka/kafka.sh"), "up"], check=True)
    return bootstrap


@pytest.fixture
def topic_names() -> TopicNames:
    return TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")


async def delete_topics(bootstrap: str, names: TopicNames) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = [t for t in await admin.list_topics() if t.startswith(names.prefix)]
        if existing:
            await admin.delete_topics(existing)
    finally:
        await admin.close()


@pytest.fixture
async def kafka_bus(kafka_bootstrap: str, topic_names: TopicNames) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(kafka_bootstrap, names=topic_names, client_id="relance-test")
    await bus.start()
    await bus.ensure_topics()
    yield bus
    await bus.stop()
    await delete_topics(kafka_bootstrap, topic_names)


@pytest.fixture
async def pg_bus(
    pool: asyncpg.Pool, database_url: str, topic_names: TopicNames
) -> AsyncIterator[PostgresLogBus]:
    bus = PostgresLogBus(
        pool, database_url, names=topic_names, session_timeout_s=3.0, heartbeat_s=0.2
    )
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture(params=["kafka", "postgres", "memory"])
def bus(request: pytest.FixtureRequest) -> Bus:
    """The bus contract runs against every implementation of the port."""
    if request.param == "memory":
        return InMemoryBus(request.getfixturevalue("topic_names"))
    value: Bus = request.getfixturevalue(
        {"kafka": "kafka_bus", "postgres": "pg_bus"}[request.param]
    )
    return value


@pytest.fixture(params=["kafka", "postgres"])
def durable_bus(request: pytest.FixtureRequest) -> Bus:
    """The buses that survive a process crash."""
    value: Bus = request.getfixturevalue(
        {"kafka": "kafka_bus", "postgres": "pg_bus"}[request.param]
    )
    return value


def platform_settings(
    database_url: str, names: TopicNames, data_dir: Path, **overrides: object
) -> CommonSettings:
    """What a test process runs with. Keys: write `wk-test`, admin `ak-test`, shop `shop`."""
    return CommonSettings(
        database_url=database_url,
        topic_prefix=names.prefix,
        data_dir=data_dir,
        write_keys="shop:wk-test",
        admin_keys="shop:ak-test",
        drain_timeout_s=5.0,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
async def platform(
    database_url: str, topic_names: TopicNames, tmp_path: Path
) -> AsyncIterator[Platform]:
    """A whole process platform (pool, migrations, PostgreSQL log bus, outbox, keys) on the
    per-test database, as a composition root would build it."""
    common = platform_settings(database_url, topic_names, tmp_path / "var", bus="postgres")
    started = await start_platform(common, client_id="relance-test")
    yield started
    await started.stop()


@pytest.fixture
async def kafka_platform(
    database_url: str, topic_names: TopicNames, tmp_path: Path, kafka_bootstrap: str
) -> AsyncIterator[Platform]:
    """The same on real Kafka (outbox table + relay)."""
    common = platform_settings(
        database_url, topic_names, tmp_path / "var", bus="kafka", kafka_bootstrap=kafka_bootstrap
    )
    started = await start_platform(common, client_id="relance-test")
    yield started
    await started.stop()
    await delete_topics(kafka_bootstrap, topic_names)


def shared_data(relative: str) -> Path:
    """A file of the shared datasets: `RELANCE_SHARED_DATA`, else `shared/data` beside the
    repository (where CI puts it), else the workplace's `/work/shared/data`."""
    candidates = [
        Path(os.environ["RELANCE_SHARED_DATA"]) if os.environ.get("RELANCE_SHARED_DATA") else None,
        REPO.parent / "shared" / "data",
        Path("/work/shared/data"),
    ]
    for root in candidates:
        if root is not None and (root / relative).exists():
            return root / relative
    searched = ", ".join(str(c) for c in candidates if c is not None)
    raise FileNotFoundError(f"{relative} not found under any of: {searched}")


@pytest.fixture(scope="session")
def online_retail_file() -> Path:
    """The UCI Online Retail file (complete, 541,909 lines)."""
    return shared_data("online_retail/online_retail.csv.gz")
