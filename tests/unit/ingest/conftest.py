"""Fakes and an in-process app for ingest unit tests.

Every HTTP test runs twice: through FastAPI's routes, and through `IngestFront` as a
running server serves the Segment routes (ahead of the framework).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from relance_ingest.adapters.memory_carts import InMemoryCartStore
from relance_ingest.http.router import build_router
from relance_ingest.http.segment import IngestFront, segment_endpoints
from relance_ingest.settings import IngestSettings
from relance_ingest.testing import RecordingPublisher
from relance_ingest.wiring import install_body_limits, make_deps
from relance_runtime.auth import StaticKeyStore
from relance_runtime.clock import FixedClock
from relance_runtime.tokens import TokenSigner

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WRITE_KEY = "wk_test_1"
TOKEN_KEYS = "k1:0123456789abcdef0123456789abcdef"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


class Harness:
    def __init__(self, settings: IngestSettings, *, front: bool = False) -> None:
        self.publisher = RecordingPublisher()
        self.carts = InMemoryCartStore()
        self.signer = TokenSigner.from_setting(TOKEN_KEYS)
        self.clock = FixedClock(NOW)
        deps = make_deps(
            settings,
            publisher=self.publisher,
            carts=self.carts,
            keys=StaticKeyStore.from_settings(f"shop1:{WRITE_KEY},shop2:wk_other", "adm"),
            signer=self.signer,
            clock=self.clock,
        )
        self.app = FastAPI()
        self.app.include_router(build_router(deps))
        install_body_limits(self.app, settings)
        endpoints = segment_endpoints(deps)
        served = IngestFront(self.app, lambda: endpoints) if front else self.app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served), base_url="http://ingest.test"
        )

    @staticmethod
    def basic(key: str) -> dict[str, str]:
        return basic(key)

    @property
    def auth(self) -> dict[str, str]:
        return basic(WRITE_KEY)


@pytest.fixture(params=["framework", "front"])
def make_harness(request: pytest.FixtureRequest) -> Callable[[IngestSettings], Harness]:
    front = request.param == "front"
    return lambda settings: Harness(settings, front=front)


@pytest.fixture
async def harness(make_harness: Callable[[IngestSettings], Harness]) -> Harness:
    return make_harness(IngestSettings(rate_per_s=1000, rate_burst=1000))
