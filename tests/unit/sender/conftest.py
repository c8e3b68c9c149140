from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relance_runtime.tokens import TokenSigner
from relance_sender.domain.request import SendRequest
from relance_sender.email_message import EmailBuilder, SenderIdentity
from relance_sender.rendering.renderer import Renderer, ShopProfile, SocialProfile

NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
PUBLIC_URL = "https://relance.example"


def full_context() -> dict[str, Any]:
    return {
        "contact": {
            "email": "zoe@example.org",
            "phone": "+33612345678",
            "first_name": "Zoé",
            "loyalty_tier": "recurrence",
            "country": "FR",
        },
        "cart": {
            "items": [
                {"name": "Pull en laine", "quantity": 2, "price": "49.90"},
                {"name": "Bonnet <rouge>", "quantity": 1, "price": "19.00"},
            ],
            "total": "118.80",
            "currency": "EUR",
            "url": "https://shop.example/cart/c1",
            "clear_at": "2025-03-05T10:00:00Z",
        },
        "coupon": {"code": "BDAY15", "discount": "15 %", "expires_at": "2025-03-31"},
        "last_order": {
            "order_id": "o-41",
            "at": "2024-09-01T10:00:00Z",
            "total": "120.00",
            "currency": "EUR",
        },
        "recommendations": {
            "strategy": "cross_sell",
            "based_on_product_ids": ["p-41"],
            "based_on_categories": ["maille"],
            "products": [
                {"name": "Écharpe", "url": "https://shop.example/p/echarpe", "price": "29.00"},
                {"name": "Gants", "url": "https://shop.example/p/gants"},
            ],
        },
        "order_id": "o-42",
    }


def make_request(
    plan: str = "abandoned_cart",
    step: str = "reminder_1",
    variant: str | None = None,
    *,
    channel: str = "email",
    purpose: str = "marketing",
    locale: str | None = "fr",
    context: dict[str, Any] | None = None,
    message_id: str = "m-1",
    contact_key: str = "u-1",
    not_after: datetime | None = None,
) -> SendRequest:
    return SendRequest.from_json(
        {
            "message_id": message_id,
            "shop_id": "shop-1",
            "contact_key": contact_key,
            "plan": plan,
            "step": step,
            "variant": variant,
            "channel": channel,
            "purpose": purpose,
            "locale": locale,
            "context": full_context() if context is None else context,
            "not_after": not_after.isoformat() if not_after else None,
        }
    )


@pytest.fixture
def shop() -> ShopProfile:
    return ShopProfile(
        name="Maison Dupont",
        url="https://shop.example",
        support_url="https://shop.example/aide",
        review_url="https://shop.example/avis",
        postal_address="1 rue de la Paix, 75002 Paris",
        social=(SocialProfile("Instagram", "https://instagram.com/maisondupont"),),
    )


@pytest.fixture
def renderer(shop: ShopProfile) -> Renderer:
    return Renderer(shop=shop, default_locale="fr")


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner({"k1": b"0123456789abcdef0123"}, "k1")


@pytest.fixture
def identity() -> SenderIdentity:
    return SenderIdentity(
        marketing_from="Maison Dupont <news@shop.example>",
        transactional_from="Maison Dupont <commandes@shop.example>",
        message_id_domain="mail.shop.example",
        feedback_sender_id="relance",
    )


@pytest.fixture
def builder(renderer: Renderer, signer: TokenSigner, identity: SenderIdentity) -> EmailBuilder:
    return EmailBuilder(renderer=renderer, signer=signer, public_url=PUBLIC_URL, identity=identity)


@dataclass(frozen=True)
class DkimTestKey:
    """An RSA-2048 DKIM key: the private PEM to sign with, and the DNS TXT record."""

    pem: bytes
    record: bytes


@cache
def dkim_test_key() -> DkimTestKey:
    """One key for the whole session (generating one takes a while)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimTestKey(pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public))
