"""The feedback service as its own FastAPI app (`relance serve feedback`)."""

from __future__ import annotations

from fastapi import FastAPI

from relance_feedback.bootstrap import build, configure_app
from relance_runtime.host import create_host_app
from relance_runtime.settings import CommonSettings


def create_app(common: CommonSettings | None = None) -> FastAPI:
    return create_host_app(
        common or CommonSettings(),
        {"feedback": build},
        title="Relance feedback",
        app_hooks=[configure_app],
    )
