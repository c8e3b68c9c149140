"""Fixtures of the system suite: one `System` (every service as its own process) per module.

Starting eight processes costs ~20-40 s on the 2-core CI machine, so the stories share one
system per module and each test works on its own contacts (and checks its oracles by its
own event ids / message ids / addresses). The database is cloned from the migrated
template of `tests/conftest.py` (`pg_root_dsn`, `pg_template`), exactly as the shared
per-test `database_url` fixture does, but for the module's lifetime.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from .harness import System


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def clone_database(root_dsn: str, template: str) -> str:
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(root_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    return _with_database(root_dsn, name)


async def drop_database(root_dsn: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(root_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def drop_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        existing = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if existing:
            await admin.delete_topics(existing)
    except Exception:
        pass
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("system")


@pytest.fixture(scope="module")
async def module_database(pg_root_dsn: str, pg_template: str) -> AsyncIterator[str]:
    dsn = await clone_database(pg_root_dsn, pg_template)
    yield dsn
    await drop_database(pg_root_dsn, dsn)


@pytest.fixture(scope="module")
async def system(
    module_tmp: Path, module_database: str, kafka_bootstrap: str
) -> AsyncIterator[System]:
    """Ingest, 2x segmentation, 2x orchestrator, 2x sender, feedback on the shared broker."""
    prefix = f"e2e{uuid.uuid4().hex[:10]}."
    started = System(module_tmp, module_database, kafka_bootstrap, prefix)
    try:
        started.start()
        yield started
    finally:
        started.stop()
        await drop_topics(kafka_bootstrap, prefix)


@pytest.fixture
def fresh(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique token for the test's contacts (its own oracle scope)."""
    yield f"{request.node.name[:20]}-{uuid.uuid4().hex[:8]}"
