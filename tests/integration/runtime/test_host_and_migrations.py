"""The host app's health, readiness and error shape; migrations that apply once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from relance_runtime.db import migrate
from relance_runtime.errors import ConfigError
from relance_runtime.host import create_host_app
from relance_runtime.platform import Platform
from relance_runtime.settings import CommonSettings


class Item(BaseModel):
    name: str
    quantity: int


class EchoComponent:
    name = "echo"

    def __init__(self, platform: Platform) -> None:
        self.started = False
        router = APIRouter()

        @router.post("/echo")
        async def echo(item: Item) -> Item:
            return item

        self._router = router

    def routers(self) -> Sequence[APIRouter]:
        return [self._router]

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def readiness(self) -> Mapping[str, bool]:
        return {"started": self.started}


async def test_health_readiness_and_bad_input_answers(database_url: str, tmp_path: object) -> None:
    common = CommonSettings(database_url=database_url, bus="postgres", topic_prefix="h.")
    app = create_host_app(common, {"echo": EchoComponent})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"database": True, "bus": True, "echo.started": True}
            bad = await client.post("/echo", json={"name": "mug", "quantity": "two"})
            assert bad.status_code == 400
            assert bad.json() == {
                "errors": [{"field": "quantity", "reason": bad.json()["errors"][0]["reason"]}]
            }
            assert "integer" in bad.json()["errors"][0]["reason"]
            missing = await client.post(
                "/echo", content=b"{not json", headers={"content-type": "application/json"}
            )
            assert missing.status_code == 400


async def test_migrations_apply_once_and_refuse_edits(pg_root_dsn: str, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn) == []  # the template already has everything
        await conn.execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE package = 'relance_runtime'"
        )
        with pytest.raises(ConfigError, match="changed after it was applied"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_migration_once(pg_root_dsn: str) -> None:
    admin = await asyncpg.connect(pg_root_dsn)
    await admin.execute('CREATE DATABASE "fresh_migrations"')
    await admin.close()
    dsn = urlunsplit(urlsplit(pg_root_dsn)._replace(path="/fresh_migrations"))
    try:
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        import asyncio

        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [m for r in results for m in r]
        assert len(applied) == len(set(applied))
        assert "relance_runtime/0001_runtime" in applied
        for c in conns:
            await c.close()
    finally:
        admin = await asyncpg.connect(pg_root_dsn)
        await admin.execute('DROP DATABASE IF EXISTS "fresh_migrations" WITH (FORCE)')
        await admin.close()
