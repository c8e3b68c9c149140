"""One message to send, as the orchestrator asked for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from relance_events import Event
from relance_events.payloads import MessageRequested
from relance_sender.domain.ledger import Channel, Purpose


@dataclass(frozen=True, slots=True)
class SendRequest:
    """`context` carries `contact` (email, phone, first_name, loyalty_tier, country) and
    whatever the step's template uses (last_order, cart, coupon, recommendations, order_id,
    shop overrides)."""

    message_id: str
    shop_id: str
    contact_key: str
    plan: str
    step: str
    variant: str | None
    channel: Channel
    purpose: Purpose
    locale: str | None
    context: Mapping[str, Any] = field(default_factory=dict)
    not_after: datetime | None = None
    plan_instance: str | None = None

    @classmethod
    def from_event(cls, event: Event[MessageRequested]) -> SendRequest:
        p = event.payload
        return cls(
            message_id=p.message_id,
            shop_id=event.shop_id,
            contact_key=event.contact_key,
            plan=p.plan,
            step=p.step,
            variant=p.variant,
            channel=p.channel,
            purpose=p.purpose,
            locale=p.locale,
            context=dict(p.context),
            not_after=p.not_after,
            plan_instance=p.plan_instance,
        )

    @property
    def contact(self) -> Mapping[str, Any]:
        value = self.context.get("contact")
        return value if isinstance(value, Mapping) else {}

    def expired(self, now: datetime) -> bool:
        return self.not_after is not None and now > self.not_after

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "shop_id": self.shop_id,
            "contact_key": self.contact_key,
            "plan": self.plan,
            "step": self.step,
            "variant": self.variant,
            "channel": self.channel,
            "purpose": self.purpose,
            "locale": self.locale,
            "context": dict(self.context),
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "plan_instance": self.plan_instance,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SendRequest:
        not_after = data.get("not_after")
        channel: Channel = "sms" if data["channel"] == "sms" else "email"
        purpose: Purpose = "transactional" if data["purpose"] == "transactional" else "marketing"
        return cls(
            message_id=str(data["message_id"]),
            shop_id=str(data["shop_id"]),
            contact_key=str(data["contact_key"]),
            plan=str(data["plan"]),
            step=str(data["step"]),
            variant=data.get("variant"),
            channel=channel,
            purpose=purpose,
            locale=data.get("locale"),
            context=dict(data.get("context") or {}),
            not_after=datetime.fromisoformat(not_after) if not_after else None,
            plan_instance=data.get("plan_instance"),
        )
