"""Helpers for the composition root: build the deps and install the body-limit middleware."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from opentelemetry.trace import Tracer

from relance_ingest.domain.rate_limit import RateLimiter
from relance_ingest.http.body_limit import BodyLimitMiddleware, ingest_body_limits
from relance_ingest.http.router import IngestDeps
from relance_ingest.ports import CartStore
from relance_ingest.services import IngestService, TrackingService
from relance_ingest.settings import IngestSettings
from relance_runtime.auth import KeyStore
from relance_runtime.bus.ports import Publisher
from relance_runtime.clock import Clock
from relance_runtime.tokens import TokenSigner


def make_deps(
    settings: IngestSettings,
    *,
    publisher: Publisher,
    carts: CartStore,
    keys: KeyStore,
    signer: TokenSigner,
    clock: Clock,
    spans: Tracer | None = None,
) -> IngestDeps:
    return IngestDeps(
        ingest=IngestService(
            publisher,
            carts,
            max_age=timedelta(days=settings.max_event_age_days),
            max_ahead=timedelta(seconds=settings.max_clock_skew_s),
            spans=spans,
        ),
        tracking=TrackingService(publisher, signer),
        keys=keys,
        limiter=RateLimiter(rate=settings.rate_per_s, burst=settings.rate_burst),
        clock=clock,
        settings=settings,
    )


def install_body_limits(app: FastAPI, settings: IngestSettings) -> None:
    """413 while streaming, after gzip decoding, for the ingest routes only."""
    app.add_middleware(BodyLimitMiddleware, limit_for=ingest_body_limits(settings))
