"""Contexts as the orchestrator really sends them: a first order before segmentation has
named a tier, and a cart with only what the orchestrator knows of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relance_sender.domain.request import SendRequest
from relance_sender.rendering.renderer import Renderer, ShopProfile

SHOP = ShopProfile(
    name="Maison Test",
    url="https://shop.example",
    support_url="https://shop.example/help",
    review_url="https://shop.example/reviews",
    cart_retention_days=7,
)


class Links:
    def click(self, url: str) -> str:
        return url


def request(plan: str, step: str, variant: str | None, context: dict[str, Any]) -> SendRequest:
    return SendRequest(
        message_id="m-1",
        shop_id="shop",
        contact_key="u-1",
        plan=plan,
        step=step,
        variant=variant,
        channel="email",
        purpose="marketing",
        locale="en",
        context=context,
    )


@pytest.mark.parametrize("tier", [None, "discovery"])
def test_a_welcome_renders_whether_or_not_the_tier_is_known_yet(tier: str | None) -> None:
    renderer = Renderer(shop=SHOP, default_locale="en")
    contact = {"first_name": "Ada", "email": "ada@example.com", "loyalty_tier": tier}
    email = renderer.render_email(
        request("welcome_pack", "welcome", "standard", {"contact": contact}),
        Links(),  # type: ignore[arg-type]
        unsubscribe_url="https://shop.example/u/t",
        pixel_url="https://shop.example/t/o/t.gif",
    )
    if tier is None:
        assert "Every order takes you further" in email.text
        assert "tier_None" not in email.html
    else:
        assert "Your current tier: Discovery" in email.text


def test_a_cart_reminder_gets_its_link_and_clearing_date_from_the_shop() -> None:
    renderer = Renderer(shop=SHOP, default_locale="en")
    changed = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    cart = {
        "cart_id": "c-1",
        "total": "59.80",
        "currency": "EUR",
        "changed_at": changed.isoformat(),
        "items": [{"product_id": "p1", "name": "Teapot", "price": "29.90", "quantity": 2}],
    }
    email = renderer.render_email(
        request(
            "abandoned_cart", "reminder_2", None, {"contact": {"first_name": "Ada"}, "cart": cart}
        ),
        Links(),  # type: ignore[arg-type]
        unsubscribe_url="https://shop.example/u/t",
        pixel_url="https://shop.example/t/o/t.gif",
    )
    assert "https://shop.example/cart" in email.html
    assert "Teapot" in email.text
    cleared = (changed + timedelta(days=7)).date()
    assert str(cleared.day) in email.preheader
