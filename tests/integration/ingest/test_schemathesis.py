"""Schemathesis over the ingest OpenAPI schema: no 5xx, and every answer matches the schema.

It runs against the app as a server serves it (`IngestFront` answering the Segment routes
ahead of FastAPI) and against FastAPI's own routes."""

from __future__ import annotations

import base64

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relance_ingest.adapters.memory_carts import InMemoryCartStore
from relance_ingest.http.router import build_router
from relance_ingest.http.segment import IngestFront, segment_endpoints
from relance_ingest.settings import IngestSettings
from relance_ingest.testing import RecordingPublisher
from relance_ingest.wiring import install_body_limits, make_deps
from relance_runtime.auth import StaticKeyStore
from relance_runtime.clock import SystemClock
from relance_runtime.tokens import TokenSigner


def _app(*, front: bool) -> FastAPI | IngestFront:
    ingest_settings = IngestSettings(rate_per_s=100_000, rate_burst=100_000)
    deps = make_deps(
        ingest_settings,
        publisher=RecordingPublisher(),
        carts=InMemoryCartStore(),
        keys=StaticKeyStore.from_settings("shop1:wk_schema", ""),
        signer=TokenSigner.from_setting("k1:0123456789abcdef0123456789abcdef"),
        clock=SystemClock(),
    )
    app = FastAPI(title="relance ingest")
    app.include_router(build_router(deps))
    install_body_limits(app, ingest_settings)
    if not front:
        return app
    endpoints = segment_endpoints(deps)
    return IngestFront(app, lambda: endpoints)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app(front=True))
framework_schema = schemathesis.openapi.from_asgi("/openapi.json", _app(front=False))
AUTH = {"Authorization": "Basic " + base64.b64encode(b"wk_schema:").decode()}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_ingest_api_conforms(case: schemathesis.Case) -> None:
    response = case.call_and_validate(headers=AUTH, checks=CHECKS)
    assert response.status_code < 500


@framework_schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_ingest_api_conforms_through_the_framework_routes(case: schemathesis.Case) -> None:
    response = case.call_and_validate(headers=AUTH, checks=CHECKS)
    assert response.status_code < 500
