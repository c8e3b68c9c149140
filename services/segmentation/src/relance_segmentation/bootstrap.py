"""Composition root of the segmentation service: wires adapters to the platform."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from relance_runtime.host import ServiceComponent
from relance_runtime.platform import Platform
from relance_runtime.service import Component
from relance_segmentation.adapters.postgres import SegmentationRepository
from relance_segmentation.domain.aggregates import RELEVANT_TYPES
from relance_segmentation.http import HttpDeps, build_router
from relance_segmentation.services import SegmentationService
from relance_segmentation.settings import SegmentationSettings


def build_service(platform: Platform, settings: SegmentationSettings) -> SegmentationService:
    repo = SegmentationRepository(settings.lifecycle(), settings.basket_window_days)
    return SegmentationService(
        repo,
        platform.pool,
        platform.outbox,
        platform.clock,
        recompute_interval=timedelta(seconds=settings.recompute_interval_s),
        check_every_s=settings.recompute_check_s,
    )


def build(platform: Platform) -> ServiceComponent:
    settings = SegmentationSettings()
    service = build_service(platform, settings)
    # Events no aggregate reads (page and product views...) are skipped undecoded.
    consumers = platform.consumers_for("segmentation", service.handle, reads=RELEVANT_TYPES)
    router = build_router(
        HttpDeps(pool=platform.pool, repo=service.repo, keys=platform.keys, clock=platform.clock)
    )
    return Component(
        "segmentation", routers=[router], consumers=consumers, background=[service.run_schedule]
    )


def configure_app(app: FastAPI) -> None:
    """Hook run when the app is created (ASGI middleware goes here)."""
    del app
