"""A real uvicorn server on loopback around the ingest router (in-memory publisher), served
as `relance serve ingest` serves it: `IngestFront` ahead of the FastAPI app."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI

from relance_ingest.adapters.memory_carts import InMemoryCartStore
from relance_ingest.http.router import build_router
from relance_ingest.http.segment import IngestFront, segment_endpoints
from relance_ingest.settings import IngestSettings
from relance_ingest.testing import RecordingPublisher
from relance_ingest.wiring import install_body_limits, make_deps
from relance_runtime.auth import StaticKeyStore
from relance_runtime.clock import SystemClock
from relance_runtime.tokens import TokenSigner

WRITE_KEY = "wk_integration"
TOKEN_KEYS = "k1:0123456789abcdef0123456789abcdef"


@dataclass
class LiveIngest:
    url: str
    app: FastAPI
    publisher: RecordingPublisher
    signer: TokenSigner
    write_key: str = WRITE_KEY


def build_app(
    settings: IngestSettings,
) -> tuple[FastAPI, IngestFront, RecordingPublisher, TokenSigner]:
    publisher = RecordingPublisher(retry_after_s=2)
    signer = TokenSigner.from_setting(TOKEN_KEYS)
    deps = make_deps(
        settings,
        publisher=publisher,
        carts=InMemoryCartStore(),
        keys=StaticKeyStore.from_settings(f"shop1:{WRITE_KEY}", ""),
        signer=signer,
        clock=SystemClock(),
    )
    app = FastAPI(title="relance ingest (test)")
    app.include_router(build_router(deps))
    install_body_limits(app, settings)
    endpoints = segment_endpoints(deps)
    return app, IngestFront(app, lambda: endpoints), publisher, signer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def live_ingest() -> Iterator[LiveIngest]:
    """The server runs in its own thread and loop, so blocking clients (the SDK) work."""
    app, served, publisher, signer = build_app(IngestSettings(rate_per_s=10_000, rate_burst=10_000))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(served, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield LiveIngest(f"http://127.0.0.1:{port}", app, publisher, signer)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
async def pg_conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the shared per-test database (every migration applied)."""
    async with pool.acquire() as conn:
        yield conn
