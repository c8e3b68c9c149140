"""Composition root of the orchestrator service: wires adapters to the platform.

- A consumer of `SUBSCRIPTIONS["orchestrator"]` (events, segments, message status): each
  batch in one transaction (inbox claim + state + timers + journal + runtime outbox).
  Event types the plans cannot act on (page and product views, segment changes) are
  skipped by their header, undecoded.
- The timer loop, a background task reading `platform.clock` (or the clock given).
- `GET /v1/plans/stats` (admin key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI

from relance_orchestrator.adapters.postgres_shops import PostgresShopDirectory
from relance_orchestrator.adapters.postgres_timers import (
    PostgresContactStore,
    PostgresJournal,
    PostgresTimerStore,
)
from relance_orchestrator.consumer import SERVICE, EventHandler, TimerLoop
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.http import OrchestratorDeps, build_router
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.services import Orchestrator, TimerRetry
from relance_orchestrator.settings import OrchestratorSettings
from relance_runtime.auth import require_key
from relance_runtime.clock import Clock
from relance_runtime.platform import Platform
from relance_runtime.service import Component


@dataclass(frozen=True)
class OrchestratorWiring:
    """What `build` assembles (tests use the parts)."""

    settings: OrchestratorSettings
    orchestrator: Orchestrator
    handler: EventHandler
    timers: TimerLoop
    deps: OrchestratorDeps


def wire(
    platform: Platform, settings: OrchestratorSettings, clock: Clock | None = None
) -> OrchestratorWiring:
    clock = clock or platform.clock
    orchestrator = Orchestrator(
        engine=Engine(load_plans(settings.plans_dir), settings.policy()),
        contacts=PostgresContactStore(),
        timers=PostgresTimerStore(),
        journal=PostgresJournal(),
        outbox=platform.outbox,
        shops=PostgresShopDirectory(
            timezone=settings.shop_timezone, ttl=timedelta(seconds=settings.shop_facts_ttl_s)
        ),
        retry=TimerRetry(
            max_attempts=settings.timer_max_attempts,
            backoff=timedelta(seconds=settings.timer_retry_backoff_s),
        ),
    )
    return OrchestratorWiring(
        settings=settings,
        orchestrator=orchestrator,
        handler=EventHandler(orchestrator, platform.pool, clock),
        timers=TimerLoop(
            orchestrator,
            platform.pool,
            clock,
            batch=settings.timer_batch,
            idle_s=settings.timer_idle_s,
        ),
        deps=OrchestratorDeps(
            orchestrator=orchestrator,
            pool=platform.pool,
            shop_of=require_key(platform.keys, "admin"),
            attribution_window_days=settings.attribution_window_days,
        ),
    )


def build(
    platform: Platform,
    settings: OrchestratorSettings | None = None,
    *,
    clock: Clock | None = None,
) -> Component:
    """`clock` overrides `platform.clock` (tests inject a `FixedClock`)."""
    wiring = wire(platform, settings or OrchestratorSettings(), clock)
    return Component(
        SERVICE,
        routers=[build_router(wiring.deps)],
        consumers=platform.consumers_for(
            SERVICE, wiring.handler, reads=wiring.orchestrator.engine.interest.types
        ),
        background=[wiring.timers.run],
    )


def configure_app(app: FastAPI) -> None:
    """Hook run when the app is created (ASGI middleware goes here)."""
    del app
