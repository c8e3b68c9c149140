"""Composition root of the orchestrator service: wires adapters to the platform."""

from __future__ import annotations

from fastapi import FastAPI

from relance_runtime.host import ServiceComponent
from relance_runtime.logging_component import logging_component
from relance_runtime.platform import Platform


def build(platform: Platform) -> ServiceComponent:
    return logging_component("orchestrator", platform)


def configure_app(app: FastAPI) -> None:
    """Hook run when the app is created (ASGI middleware goes here)."""
    del app
