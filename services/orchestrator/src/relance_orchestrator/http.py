"""HTTP: `GET /v1/plans/stats` (admin key)."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from relance_orchestrator.services import Orchestrator

ShopOf = Callable[..., Awaitable[str]]


class StepStats(BaseModel):
    """One step of one plan. `converted`: orders attributed to this step's messages
    (a purchase within the attribution window after the contact's last message)."""

    model_config = ConfigDict(frozen=True)

    plan: str = Field(examples=["welcome_pack"])
    step: str = Field(examples=["welcome"])
    requested: int = Field(ge=0, description="messages the orchestrator requested")
    sent: int = Field(ge=0, description="of those, reported sent by the sender")
    opened: int = Field(ge=0, description="opened at least once (a click counts as an open)")
    clicked: int = Field(ge=0, description="clicked at least once")
    converted: int = Field(ge=0, description="orders attributed to these messages")
    revenue: Decimal = Field(description="total of the attributed orders")
    held: int = Field(ge=0, description="times a due message was held (quiet hours, cap)")
    dropped: int = Field(ge=0, description="due messages dropped (no basis, objection, cap)")
    skipped: int = Field(ge=0, description="steps skipped because their condition failed")


class PlanStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    plan: str
    parked_timers: int = Field(
        ge=0, description="timers parked after repeated failures (see the journal for why)"
    )
    steps: list[StepStats]


class PlanStatsResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    shop_id: str
    attribution_window_days: float
    since: datetime | None
    plans: list[PlanStats]


@dataclass(frozen=True)
class OrchestratorDeps:
    orchestrator: Orchestrator
    pool: asyncpg.Pool
    shop_of: ShopOf
    attribution_window_days: float


def build_router(deps: OrchestratorDeps) -> APIRouter:
    router = APIRouter(tags=["plans"])

    @router.get(
        "/v1/plans/stats",
        response_model=PlanStatsResponse,
        summary="Per plan and step: requested, sent, opened, clicked, converted, revenue",
        responses={401: {"description": "missing or wrong admin key"}},
    )
    async def plan_stats(
        shop_id: Annotated[str, Depends(deps.shop_of)],
        since: Annotated[
            AwareDatetime | None,
            Query(description="only messages requested at or after this instant (ISO 8601)"),
        ] = None,
    ) -> PlanStatsResponse:
        async with deps.pool.acquire() as conn:
            steps, parked = await deps.orchestrator.stats(conn, shop_id, since)
        by_plan: dict[str, list[StepStats]] = {}
        for s in steps:
            by_plan.setdefault(s.plan, []).append(
                StepStats(
                    plan=s.plan,
                    step=s.step,
                    requested=s.requested,
                    sent=s.sent,
                    opened=s.opened,
                    clicked=s.clicked,
                    converted=s.converted,
                    revenue=s.revenue,
                    held=s.held,
                    dropped=s.dropped,
                    skipped=s.skipped,
                )
            )
        names = sorted(set(by_plan) | set(parked))
        return PlanStatsResponse(
            shop_id=shop_id,
            attribution_window_days=deps.attribution_window_days,
            since=since,
            plans=[
                PlanStats(plan=n, parked_timers=parked.get(n, 0), steps=by_plan.get(n, []))
                for n in names
            ],
        )

    return router
