"""The ingest service as its own FastAPI app (`relance serve ingest`)."""

from __future__ import annotations

from fastapi import FastAPI

from relance_ingest.bootstrap import build, configure_app
from relance_runtime.host import create_host_app
from relance_runtime.settings import CommonSettings


def create_app(common: CommonSettings | None = None) -> FastAPI:
    return create_host_app(
        common or CommonSettings(),
        {"ingest": build},
        title="Relance ingest",
        app_hooks=[configure_app],
    )
