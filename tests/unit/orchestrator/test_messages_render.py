"""The contract between the plans and the sender's copy: every message the shipped plans
request, as the engine builds it and as it travels (`message.requested` encoded and decoded),
renders in every built-in locale, as an email and as an SMS.

The sender renders with StrictUndefined, so a context key a template reads and the engine
does not send fails here, not in production."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta

import pytest

from relance_events import decode, encode
from relance_orchestrator.domain.commands import RequestMessage
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.services import message_requested_event
from relance_sender.domain.request import SendRequest
from relance_sender.rendering.formatting import format_date
from relance_sender.rendering.renderer import Renderer, ShopProfile, SocialProfile

from .conftest import T0, Harness

SHOP = ShopProfile(
    name="Maison Test",
    url="https://shop.example",
    support_url="https://shop.example/help",
    review_url="https://shop.example/reviews",
    postal_address="1 rue de la Paix, Paris",
    social=(SocialProfile("Instagram", "https://instagram.example/maison"),),
)


class _Links:
    def click(self, url: str) -> str:
        return f"https://t.example/c?u={url}"

    def survey(self, answer: str) -> str:
        return f"https://t.example/s?a={answer}"

    def reason(self, reason: str) -> str:
        return f"https://t.example/r?r={reason}"


def _stories(harness: Callable[..., Harness]) -> Iterator[RequestMessage]:
    """Stories that between them reach every step and variant of the shipped plans."""
    for total, contact in (("80", "big"), ("40", "small")):  # average basket: 50
        h = harness()
        h.identify(T0 - timedelta(days=1), birthday=date(1990, 6, 15), contact=contact)
        h.order(T0, f"o1-{contact}", total, contact=contact)
        h.until(T0 + timedelta(days=8))
        answer = "not_satisfied" if contact == "big" else "satisfied"
        h.answer(T0 + timedelta(days=8), f"o1-{contact}", answer, contact=contact)
        cart_at = T0 + timedelta(days=120)  # when no other plan is sending
        day = T0 + timedelta(days=8)
        while day < T0 + timedelta(days=400):
            if day <= cart_at < day + timedelta(days=1):
                h.cart(cart_at, f"k-{contact}", 2, contact=contact)
            day += timedelta(days=1)
            h.until(day)
            for send in h.sends():  # open what went out: opened-gated steps are reached
                if day - timedelta(days=1) < send.at <= day and send.channel == "email":
                    h.opened(day, send.plan, send.step, contact=contact)
        yield from h.sends()
    prospect = harness()
    prospect.consent(T0, contact="prospect")
    prospect.until(T0 + timedelta(days=10))
    yield from prospect.sends()


def _wire(command: RequestMessage) -> SendRequest:
    decoded = decode(encode(message_requested_event(command)))
    return SendRequest.from_event(decoded)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def requests() -> list[SendRequest]:
    return [_wire(c) for c in _stories(Harness)]


def test_the_stories_reach_every_step_and_variant_of_the_shipped_plans(
    requests: list[SendRequest],
) -> None:
    declared = {
        (plan.name, step.name, variant.name)
        for plan in load_plans()
        for step in plan.steps
        for variant in (step.variants or ())
    } | {
        (plan.name, step.name, None)
        for plan in load_plans()
        for step in plan.steps
        if not step.variants
    }
    assert {(r.plan, r.step, r.variant) for r in requests} == declared


@pytest.mark.parametrize("locale", ["fr", "en"])
def test_every_requested_message_renders_as_email_and_sms(
    requests: list[SendRequest], locale: str
) -> None:
    renderer = Renderer(shop=SHOP, default_locale=locale)
    seen: set[tuple[str, str, str | None]] = set()
    for request in requests:
        key = (request.plan, request.step, request.variant)
        if key in seen:
            continue
        seen.add(key)
        email = renderer.render_email(
            request, _Links(), unsubscribe_url="https://u.example", pixel_url="https://p.example"
        )
        assert email.subject and email.html and email.text
        assert "Undefined" not in email.html + email.text
        sms = renderer.render_sms(request, french_number=locale == "fr")
        assert sms.text.startswith("Maison Test: ")
        if "coupon" in request.context:
            code = request.context["coupon"]["code"]
            assert code in email.text and code in email.html, key
        if "cart" in request.context:  # the reminder lists the items
            for item in request.context["cart"]["items"]:
                assert item["product_id"] in email.text, key
        if request.plan == "anti_churn" and request.step == "reminder_1":
            ordered = format_date(request.context["last_order"]["at"], locale)
            assert ordered in email.text
