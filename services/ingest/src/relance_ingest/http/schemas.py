"""OpenAPI descriptions of the Segment bodies (the handlers parse bodies themselves, fast)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_ID: dict[str, Any] = {
    "anyOf": [{"type": "string", "minLength": 1, "maxLength": 128}, {"type": "integer"}]
}
_MONEY: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 9_999_999_999}
_TEXT: dict[str, Any] = {"type": "string", "maxLength": 256}

PRODUCT: dict[str, Any] = {
    "type": "object",
    "description": "A product line (Segment e-commerce spec v2).",
    "properties": {
        "product_id": _ID,
        "sku": _TEXT,
        "name": _TEXT,
        "category": _TEXT,
        "brand": _TEXT,
        "price": _MONEY,
        "quantity": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "url": {"type": "string", "maxLength": 2048},
        "image_url": {"type": "string", "maxLength": 2048},
    },
}

_COMMON: dict[str, Any] = {
    "messageId": {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "description": "Required. The same messageId from the same key produces one event.",
    },
    "userId": _ID,
    "anonymousId": _ID,
    "timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "With a timezone; at most 30 days old and 5 minutes ahead.",
    },
    "context": {"type": "object"},
    "integrations": {"type": "object"},
    "sentAt": {"type": "string"},
}

TRAITS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "maxLength": 320},
        "phone": {"type": "string", "pattern": r"^\+[1-9]\d{6,14}$", "description": "E.164"},
        "first_name": _TEXT,
        "last_name": _TEXT,
        "locale": {"type": "string", "maxLength": 35},
        "timezone": {"type": "string", "maxLength": 64, "description": "IANA, e.g. Europe/Paris"},
        "birthday": {"type": "string", "format": "date"},
        "email_consent": {"type": "string", "enum": ["granted", "denied"]},
        "sms_consent": {"type": "string", "enum": ["granted", "denied"]},
    },
}

TRACK_PROPERTIES: dict[str, Any] = {
    "type": "object",
    "description": (
        "Order Completed: order_id, total|revenue, currency, discount, coupon, products. "
        "Order Refunded: order_id, total, products. Product Added/Removed: product fields "
        "and cart_id. Cart Viewed: cart_id, products. Checkout Started: order_id, cart_id, "
        "total, products. Email Opened / Email Link Clicked: message_id, or plan and step."
    ),
    "properties": {
        "order_id": _ID,
        "cart_id": _ID,
        "total": _MONEY,
        "revenue": _MONEY,
        "discount": _MONEY,
        "coupon": _TEXT,
        "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
        "products": {"type": "array", "maxItems": 500, "items": PRODUCT},
        "message_id": _ID,
        "plan": _TEXT,
        "step": _TEXT,
        **PRODUCT["properties"],
    },
}


def _message(kind: str, required: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "title": kind,
        "description": "userId or anonymousId is required (alias: userId and previousId).",
        "required": ["messageId", *required],
        "properties": {**_COMMON, **extra},
    }


IDENTIFY = _message("identify", [], {"traits": TRAITS})
TRACK = _message(
    "track",
    ["event"],
    {"event": {"type": "string", "minLength": 1, "maxLength": 256}, "properties": TRACK_PROPERTIES},
)
ALIAS = _message("alias", ["userId", "previousId"], {"previousId": _ID})
PAGE = _message("page", [], {"name": _TEXT, "category": _TEXT, "properties": {"type": "object"}})


def _typed(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        **schema,
        "required": [*schema["required"], "type"],
        "properties": {**schema["properties"], "type": {"type": "string", "enum": [kind]}},
    }


def batch_schema(max_events: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_events,
                "items": {
                    "anyOf": [
                        _typed(IDENTIFY, "identify"),
                        _typed(TRACK, "track"),
                        _typed(ALIAS, "alias"),
                        _typed(PAGE, "page"),
                        _typed(PAGE, "screen"),
                    ]
                },
            },
            "sentAt": {"type": "string"},
            "context": {"type": "object"},
            "writeKey": {"type": "string"},
        },
    }


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class Success(BaseModel):
    model_config = ConfigDict(frozen=True)

    success: bool = True


class ErrorItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int | None = None
    field: str
    reason: str


class ErrorBody(BaseModel):
    model_config = ConfigDict(frozen=True)

    errors: list[ErrorItem] = Field(default_factory=list)


def _retry_after(description: str) -> dict[str, Any]:
    return {
        "model": ErrorBody,
        "description": description,
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    }


EVENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid messages; every bad field is named."},
    401: {"model": ErrorBody, "description": "Missing or unknown write key."},
    413: {"model": ErrorBody, "description": "Body over 32 KB per event or 500 KB per batch."},
    415: {"model": ErrorBody, "description": "Content-Encoding other than gzip."},
    429: _retry_after("Rate limit of the write key; nothing was accepted."),
    503: _retry_after("The bus did not acknowledge; none of the events were accepted."),
}
