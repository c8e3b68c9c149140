"""The support alert body, in one of three shapes chosen by configuration.

- `full`: who the customer is (name, email, phone), the order (id, date, total, items), the
  answer and comment, and a link back to the contact in Relance.
- `minimal`: ids only, for teams that prefer to pull the details themselves.
- `slack`: `{"text": ..., "blocks": [...]}`, postable as is to a Slack incoming webhook.

The body is built once, when the alert is created, and stored: every retry sends the same
bytes (only the timestamp and signature change).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, assert_never
from urllib.parse import quote

from relance_feedback.domain.answers import Answer

PayloadMode = Literal["full", "minimal", "slack"]
ALERT_TYPE = "survey.not_satisfied"
_CHOICE_LABELS = {
    "very_satisfied": "Very satisfied",
    "satisfied": "Satisfied",
    "not_satisfied": "Not satisfied",
}


@dataclass(frozen=True, slots=True)
class ContactCard:
    """What the feedback service learnt about a contact from `contact.identified`."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None

    @property
    def name(self) -> str | None:
        full = " ".join(p for p in (self.first_name, self.last_name) if p)
        return full or None


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: str
    name: str | None
    quantity: int
    price: Decimal


@dataclass(frozen=True, slots=True)
class OrderCard:
    """What the feedback service learnt about an order from `order.completed`."""

    order_id: str
    ordered_at: datetime
    total: Decimal
    currency: str
    items: tuple[OrderLine, ...] = ()


def contact_link(public_url: str, contact_key: str) -> str:
    return f"{public_url.rstrip('/')}/v1/contacts/{quote(contact_key, safe='')}"


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _full(
    answer: Answer,
    contact: ContactCard | None,
    order: OrderCard | None,
    link: str,
    created_at: datetime,
) -> dict[str, Any]:
    card = contact or ContactCard()
    return {
        "type": ALERT_TYPE,
        "timestamp": _iso(created_at),
        "data": {
            "shop_id": answer.shop_id,
            "answer_id": str(answer.answer_id),
            "answered_at": _iso(answer.answered_at),
            "answer": answer.choice,
            "nps": answer.nps,
            "comment": answer.comment,
            "contact": {
                "user_id": answer.contact_key,
                "name": card.name,
                "email": card.email,
                "phone": card.phone,
                "url": link,
            },
            "order": {
                "id": answer.order_id,
                "date": _iso(order.ordered_at) if order else None,
                "total": str(order.total) if order else None,
                "currency": order.currency if order else None,
                "items": [
                    {
                        "product_id": line.product_id,
                        "name": line.name,
                        "quantity": line.quantity,
                        "price": str(line.price),
                    }
                    for line in (order.items if order else ())
                ],
            },
        },
    }


def _minimal(answer: Answer, created_at: datetime) -> dict[str, Any]:
    return {
        "type": ALERT_TYPE,
        "timestamp": _iso(created_at),
        "data": {
            "shop_id": answer.shop_id,
            "answer_id": str(answer.answer_id),
            "user_id": answer.contact_key,
            "order_id": answer.order_id,
        },
    }


def _slack(
    answer: Answer, contact: ContactCard | None, order: OrderCard | None, link: str
) -> dict[str, Any]:
    card = contact or ContactCard()
    who = card.name or answer.contact_key
    label = _CHOICE_LABELS.get(answer.choice or "", "NPS")
    headline = f"{label}: {who} about order {answer.order_id}"
    facts = [
        f"*Customer:* {who}",
        f"*Email:* {card.email or '-'}",
        f"*Phone:* {card.phone or '-'}",
        f"*Order:* {answer.order_id}"
        + (
            f" ({order.total} {order.currency}, {order.ordered_at.date().isoformat()})"
            if order
            else ""
        ),
    ]
    if order and order.items:
        facts.append(
            "*Items:* "
            + ", ".join(f"{line.quantity} x {line.name or line.product_id}" for line in order.items)
        )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)[:3000]}},
    ]
    if answer.comment:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"> {answer.comment}"[:3000]}}
        )
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open contact"},
                    "url": link,
                }
            ],
        }
    )
    return {"text": headline, "blocks": blocks}


def alert_body(
    mode: PayloadMode,
    *,
    answer: Answer,
    contact: ContactCard | None,
    order: OrderCard | None,
    public_url: str,
    created_at: datetime,
) -> bytes:
    """The exact bytes the alert will carry on every attempt."""
    link = contact_link(public_url, answer.contact_key)
    document: dict[str, Any]
    match mode:
        case "full":
            document = _full(answer, contact, order, link, created_at)
        case "minimal":
            document = _minimal(answer, created_at)
        case "slack":
            document = _slack(answer, contact, order, link)
        case _:
            assert_never(mode)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
