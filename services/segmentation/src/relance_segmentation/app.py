"""The segmentation service as its own FastAPI app (`relance serve segmentation`)."""

from __future__ import annotations

from fastapi import FastAPI

from relance_runtime.host import create_host_app
from relance_runtime.settings import CommonSettings
from relance_segmentation.bootstrap import build, configure_app


def create_app(common: CommonSettings | None = None) -> FastAPI:
    return create_host_app(
        common or CommonSettings(),
        {"segmentation": build},
        title="Relance segmentation",
        app_hooks=[configure_app],
    )
