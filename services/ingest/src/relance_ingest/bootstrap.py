"""Composition root of the ingest service: wires adapters to the platform."""

from __future__ import annotations

import gc
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from relance_ingest.adapters.coalescing import CoalescingPublisher
from relance_ingest.adapters.pg_carts import PgCartStore
from relance_ingest.http.deps import IngestDeps
from relance_ingest.http.router import build_router
from relance_ingest.http.segment import IngestFront, segment_endpoints
from relance_ingest.settings import IngestSettings
from relance_ingest.tracing import UnrecordedTracer
from relance_ingest.wiring import install_body_limits, make_deps
from relance_runtime.host import ServiceComponent, serve_options
from relance_runtime.platform import Platform
from relance_runtime.service import Component


class IngestComponent(Component):
    """The routers, and the Segment endpoints `IngestFront` serves ahead of FastAPI."""

    def __init__(
        self, deps: IngestDeps, *, on_stop: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    ) -> None:
        super().__init__("ingest", routers=[build_router(deps)], on_stop=on_stop)
        self.endpoints: Mapping[str, ASGIApp] = segment_endpoints(deps)

    async def start(self) -> None:
        await super().start()
        # Each event allocates many short-lived objects, which run the cyclic GC often,
        # and each full run walked the whole startup heap (a batch request's p99 doubled).
        # Frozen, the startup heap is skipped, and young collections come less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)


def build(platform: Platform) -> ServiceComponent:
    """Routers only: ingest publishes (acks=all) inside the request and consumes nothing."""
    carts = PgCartStore(platform.pool)
    deps = make_deps(
        IngestSettings(),
        publisher=CoalescingPublisher(platform.bus),
        carts=carts,
        keys=platform.keys,
        signer=platform.tokens,
        clock=platform.clock,
        # Spans nobody exports are not recorded; requests keep their trace ids.
        spans=UnrecordedTracer() if platform.settings.otel_exporter == "none" else None,
    )
    return IngestComponent(deps, on_stop=[carts.close])


def configure_app(app: FastAPI) -> None:
    """Hook run when the app is created: body limits, the front, the worker processes."""
    settings = IngestSettings()
    install_body_limits(app, settings)
    options = serve_options(app)
    options.processes = settings.workers
    options.fronts.append(lambda inner: IngestFront(inner, lambda: _endpoints(app)))


def _endpoints(app: FastAPI) -> Mapping[str, ASGIApp]:
    """The endpoints of the started ingest component (none before the app's lifespan)."""
    for component in getattr(app.state, "components", ()):
        if isinstance(component, IngestComponent):
            return component.endpoints
    return {}
