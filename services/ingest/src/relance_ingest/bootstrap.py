"""Composition root of the ingest service: wires adapters to the platform."""

from __future__ import annotations

from fastapi import FastAPI

from relance_ingest.adapters.coalescing import CoalescingPublisher
from relance_ingest.adapters.pg_carts import PgCartStore
from relance_ingest.http.router import build_router
from relance_ingest.settings import IngestSettings
from relance_ingest.wiring import install_body_limits, make_deps
from relance_runtime.host import ServiceComponent
from relance_runtime.platform import Platform
from relance_runtime.service import Component


def build(platform: Platform) -> ServiceComponent:
    """Routers only: ingest publishes (acks=all) inside the request and consumes nothing."""
    deps = make_deps(
        IngestSettings(),
        publisher=CoalescingPublisher(platform.bus),
        carts=PgCartStore(platform.pool),
        keys=platform.keys,
        signer=platform.tokens,
        clock=platform.clock,
    )
    return Component("ingest", routers=[build_router(deps)])


def configure_app(app: FastAPI) -> None:
    """Hook run when the app is created (ASGI middleware goes here)."""
    install_body_limits(app, IngestSettings())
