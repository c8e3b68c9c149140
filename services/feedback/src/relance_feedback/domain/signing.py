"""Standard Webhooks v1 signing: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.

During a secret rotation both secrets sign, and the header carries both signatures
separated by a space, so the receiver can move to the new secret at its own pace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime

from relance_events import deterministic_id
from relance_feedback.errors import InvalidWebhookSecret

SECRET_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class WebhookSecret:
    key: bytes

    @classmethod
    def parse(cls, text: str) -> WebhookSecret:
        """`whsec_` + base64 of 24 to 64 bytes."""
        if not text.startswith(SECRET_PREFIX):
            raise InvalidWebhookSecret("a webhook secret starts with whsec_")
        try:
            key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidWebhookSecret("a webhook secret is whsec_ + base64") from None
        if not 24 <= len(key) <= 64:
            raise InvalidWebhookSecret("a webhook secret holds 24 to 64 bytes")
        return cls(key)

    def __repr__(self) -> str:
        return "WebhookSecret(***)"


def webhook_id(shop_id: str, order_id: str, contact_key: str) -> str:
    """The `webhook-id` of the support alert for one answer: the same on every retry."""
    alert: uuid.UUID = deterministic_id("feedback.alert", shop_id, order_id, contact_key)
    return f"msg_{alert.hex}"


def signature(secrets: tuple[WebhookSecret, ...], msg_id: str, at: datetime, body: bytes) -> str:
    """The `webhook-signature` header value, one `v1,...` per secret."""
    if not secrets:
        raise InvalidWebhookSecret("at least one webhook secret is needed to sign")
    signed = f"{msg_id}.{int(at.timestamp())}.".encode() + body
    parts = []
    for secret in secrets:
        mac = hmac.new(secret.key, signed, hashlib.sha256).digest()
        parts.append("v1," + base64.b64encode(mac).decode())
    return " ".join(parts)


def signed_headers(
    secrets: tuple[WebhookSecret, ...], msg_id: str, at: datetime, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt made at `at`."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(secrets, msg_id, at, body),
        "content-type": "application/json",
    }


def attempt_headers(
    secrets: tuple[WebhookSecret, ...], msg_id: str, at: datetime, body: bytes
) -> dict[str, str]:
    """Signed headers, or, with no secret (only allowed for the local alert file), the same
    headers without `webhook-signature`."""
    if secrets:
        return signed_headers(secrets, msg_id, at, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "content-type": "application/json",
    }
