"""The sender service as its own FastAPI app (`relance serve sender`)."""

from __future__ import annotations

from fastapi import FastAPI

from relance_runtime.host import create_host_app
from relance_runtime.settings import CommonSettings
from relance_sender.bootstrap import build


def create_app(common: CommonSettings | None = None) -> FastAPI:
    return create_host_app(common or CommonSettings(), {"sender": build}, title="Relance sender")
