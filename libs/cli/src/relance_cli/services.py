"""The five services' composition roots, by name."""

from __future__ import annotations

from collections.abc import Mapping

from relance_feedback.bootstrap import build as build_feedback
from relance_feedback.bootstrap import configure_app as configure_feedback
from relance_ingest.bootstrap import build as build_ingest
from relance_ingest.bootstrap import configure_app as configure_ingest
from relance_orchestrator.bootstrap import build as build_orchestrator
from relance_orchestrator.bootstrap import configure_app as configure_orchestrator
from relance_runtime.host import AppHook, ComponentFactory
from relance_runtime.registry import ServiceName
from relance_segmentation.bootstrap import build as build_segmentation
from relance_segmentation.bootstrap import configure_app as configure_segmentation
from relance_sender.bootstrap import build as build_sender
from relance_sender.bootstrap import configure_app as configure_sender

FACTORIES: Mapping[ServiceName, ComponentFactory] = {
    "ingest": build_ingest,
    "segmentation": build_segmentation,
    "orchestrator": build_orchestrator,
    "sender": build_sender,
    "feedback": build_feedback,
}

APP_HOOKS: Mapping[ServiceName, AppHook] = {
    "ingest": configure_ingest,
    "segmentation": configure_segmentation,
    "orchestrator": configure_orchestrator,
    "sender": configure_sender,
    "feedback": configure_feedback,
}
