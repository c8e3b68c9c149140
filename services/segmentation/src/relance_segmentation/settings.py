"""Segmentation settings (`RELANCE_SEGMENTATION_*`)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from relance_segmentation.domain.lifecycle import LifecycleConfig


class SegmentationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELANCE_SEGMENTATION_", frozen=True)

    recompute_interval_s: float = Field(default=86_400.0, gt=0)
    recompute_check_s: float = Field(default=60.0, gt=0)
    basket_window_days: int = 365
    lapsing_after_months: int = 6
    ex_customer_after_months: int = 12
    ambassador_min_orders: int = 5
    ambassador_min_m_score: int = 5
    premium_min_orders: int = 5
    premium_min_net: Decimal = Decimal(1000)
    ambassador_tier_min_orders: int = 10
    ambassador_tier_min_net: Decimal = Decimal(2000)

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
