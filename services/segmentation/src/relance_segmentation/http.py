"""Admin API: one contact's profile, and the shop's segment counts."""

# No `from __future__ import annotations`: FastAPI must see `Depends(admin)`, a closure.

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from relance_events.payloads import (
    ConsentStatus,
    ContactTraits,
    LifecycleStage,
    LoyaltyTier,
    RfmSegment,
)
from relance_runtime.auth import KeyStore, require_key
from relance_runtime.clock import Clock
from relance_segmentation.domain.rfm import recency_days
from relance_segmentation.ports import ConnectionPool, ContactView, SegmentationReads


@dataclass(frozen=True)
class HttpDeps:
    pool: ConnectionPool
    repo: SegmentationReads
    keys: KeyStore
    clock: Clock


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorItem(_Out):
    field: str
    reason: str


class ErrorsOut(_Out):
    errors: list[ErrorItem]


class AggregatesOut(_Out):
    """Amounts are decimal strings in the shop's currency, net = gross - refunded."""

    orders_count: int
    gross: Decimal
    refunded: Decimal
    net_monetary: Decimal
    average_order_value: Decimal | None
    first_order_at: datetime | None
    last_order_at: datetime | None
    last_order_total: Decimal | None
    last_email_open_at: datetime | None
    last_email_click_at: datetime | None
    birthday: date | None
    signup_at: datetime | None
    updated_at: datetime | None


class RfmOut(_Out):
    """Values as of the request; scores and segment as of the contact's last scoring."""

    recency_days: int
    frequency: int
    monetary: Decimal
    r: int | None
    f: int | None
    m: int | None
    segment: RfmSegment | None


class CartOut(_Out):
    cart_id: str
    total: Decimal
    currency: str
    items: int
    updated_at: datetime


class ContactOut(_Out):
    user_id: str
    traits: ContactTraits
    consent: dict[str, ConsentStatus]
    aggregates: AggregatesOut
    rfm: RfmOut | None
    stage: LifecycleStage | None
    tier: LoyaltyTier | None
    open_carts: list[CartOut]


class SummaryOut(_Out):
    as_of: datetime | None
    contacts_per_stage: dict[str, int]
    contacts_per_tier: dict[str, int]
    contacts_per_segment: dict[str, int]
    average_basket: Decimal | None


def contact_out(view: ContactView, now: datetime) -> ContactOut:
    a, p = view.aggregate, view.profile
    values = a.rfm_values(now)
    return ContactOut(
        user_id=a.contact_key,
        traits=a.traits,
        consent=dict(a.consent),
        aggregates=AggregatesOut(
            orders_count=a.orders_count,
            gross=a.gross,
            refunded=a.refunded,
            net_monetary=a.net_monetary,
            average_order_value=a.average_order_value,
            first_order_at=a.first_order_at,
            last_order_at=a.last_order_at,
            last_order_total=a.last_order_total,
            last_email_open_at=a.last_email_open_at,
            last_email_click_at=a.last_email_click_at,
            birthday=a.birthday,
            signup_at=a.signup_at,
            updated_at=a.updated_at,
        ),
        rfm=None
        if values is None or a.last_order_at is None
        else RfmOut(
            recency_days=recency_days(a.last_order_at, now),
            frequency=values.frequency,
            monetary=values.monetary,
            r=None if p is None else p.r,
            f=None if p is None else p.f,
            m=None if p is None else p.m,
            segment=None if p is None else p.segment,
        ),
        stage=None if p is None else p.stage,
        tier=None if p is None else p.tier,
        open_carts=[
            CartOut(
                cart_id=c.cart_id,
                total=c.total,
                currency=c.currency,
                items=c.items,
                updated_at=c.updated_at,
            )
            for c in a.open_carts.values()
        ],
    )


def build_router(deps: HttpDeps) -> APIRouter:
    router = APIRouter(tags=["segmentation"])
    admin = require_key(deps.keys, "admin")
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorsOut, "description": "Missing or unknown admin key"},
    }

    @router.get(
        "/v1/contacts/{user_id}",
        response_model=ContactOut,
        summary="A contact's traits, consent, aggregates, RFM, stage, tier and open carts",
        responses={**errors, 404: {"model": ErrorsOut, "description": "Unknown contact"}},
    )
    async def get_contact(
        user_id: Annotated[str, Path(min_length=1, max_length=256)],
        shop_id: Annotated[str, Depends(admin)],
    ) -> ContactOut | JSONResponse:
        async with deps.pool.acquire() as conn:
            view = await deps.repo.contact(conn, shop_id, user_id)
        if view is None:
            return JSONResponse(
                {"errors": [{"field": "user_id", "reason": "unknown contact"}]}, status_code=404
            )
        return contact_out(view, deps.clock.now())

    @router.get(
        "/v1/segments/summary",
        response_model=SummaryOut,
        summary="Contacts per stage, tier and RFM segment, and the average basket",
        responses=errors,
    )
    async def get_summary(shop_id: Annotated[str, Depends(admin)]) -> SummaryOut:
        async with deps.pool.acquire() as conn:
            s = await deps.repo.summary(conn, shop_id)
        return SummaryOut(
            as_of=s.as_of,
            contacts_per_stage=s.per_stage,
            contacts_per_tier=s.per_tier,
            contacts_per_segment=s.per_segment,
            average_basket=s.average_basket,
        )

    return router
