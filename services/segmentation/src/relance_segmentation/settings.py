"""Segmentation settings (`RELANCE_SEGMENTATION_*`)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from relance_segmentation.domain.lifecycle import LifecycleConfig


class SegmentationSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELANCE_SEGMENTATION_", frozen=True, extra="ignore"
    )

    recompute_interval_s: float = Field(
        default=86_400.0,
        gt=0,
        description="How often every shop's RFM, stages and tiers are recomputed (recency moves "
        "with time alone).",
    )
    recompute_check_s: float = Field(
        default=60.0, gt=0, description="How often the scheduler looks for shops that are due."
    )
    basket_window_days: int = Field(
        default=365, ge=1, description="Window of the shop's average basket (mean order value)."
    )
    lapsing_after_months: int = Field(
        default=6, ge=1, description="Calendar months without an order before `lapsing`."
    )
    ex_customer_after_months: int = Field(
        default=12, ge=1, description="Calendar months without an order before `ex_customer`."
    )
    ambassador_min_orders: int = Field(
        default=5, ge=1, description="Orders that make an active customer an `ambassador` stage."
    )
    ambassador_min_m_score: int = Field(
        default=5, ge=1, le=5, description="Or this monetary score (5 = top quintile)."
    )
    premium_min_orders: int = Field(default=5, ge=1, description="Orders for the Premium tier.")
    premium_min_net: Decimal = Field(
        default=Decimal(1000), description="Or this net spend for the Premium tier."
    )
    ambassador_tier_min_orders: int = Field(
        default=10, ge=1, description="Orders for the Ambassador tier (with the net spend below)."
    )
    ambassador_tier_min_net: Decimal = Field(
        default=Decimal(2000), description="Net spend for the Ambassador tier."
    )

    def lifecycle(self) -> LifecycleConfig:
        return LifecycleConfig(
            lapsing_after_months=self.lapsing_after_months,
            ex_customer_after_months=self.ex_customer_after_months,
            ambassador_min_orders=self.ambassador_min_orders,
            ambassador_min_m_score=self.ambassador_min_m_score,
            premium_min_orders=self.premium_min_orders,
            premium_min_net=self.premium_min_net,
            ambassador_tier_min_orders=self.ambassador_tier_min_orders,
            ambassador_tier_min_net=self.ambassador_tier_min_net,
        )
