"""Typed, frozen payloads for every event the system carries.

Each payload class names its wire `TYPE` and the `SCHEMA_VERSION` it writes. Additive,
optional fields keep the version; a breaking change bumps it (see `codec` for the policy).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from relance_events.envelope import AwareDatetime

Money = Annotated[Decimal, Field(max_digits=14, decimal_places=4)]
ShortText = Annotated[str, Field(max_length=256)]
Id = Annotated[str, Field(min_length=1, max_length=128)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]

Channel = Literal["email", "sms"]
Purpose = Literal["marketing", "transactional"]
ConsentStatus = Literal["granted", "denied"]
LifecycleStage = Literal[
    "prospect", "new_customer", "loyal", "ambassador", "lapsing", "ex_customer"
]
LoyaltyTier = Literal["discovery", "recurrence", "premium", "ambassador"]
RfmSegment = Literal[
    "champions",
    "loyal",
    "potential_loyalist",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose_them",
    "hibernating",
    "lost",
]
SurveyAnswer = Literal["very_satisfied", "satisfied", "not_satisfied"]
# Why a contact stopped buying, one click each in anti-churn emails (the sender links them,
# feedback records them). Appending a reason is compatible; renaming or removing one is not.
LeaveReason = Literal[
    "too_expensive",
    "found_elsewhere",
    "no_longer_needed",
    "bad_experience",
    "too_many_emails",
    "other",
]
LEAVE_REASONS: Final[tuple[LeaveReason, ...]] = get_args(LeaveReason)


class Payload(BaseModel):
    """Base of every payload: frozen, and unknown fields from newer producers are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1


class UnknownPayload(Payload):
    """A type this build does not know; kept whole so it can be logged or forwarded."""

    model_config = ConfigDict(frozen=True, extra="allow")

    TYPE: ClassVar[str] = "unknown"


# --- contacts --------------------------------------------------------------------------


class ContactTraits(BaseModel):
    """What a shop tells us about a contact; every field optional (identify is partial)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    email: Annotated[str, Field(max_length=320)] | None = None
    phone: Annotated[str, Field(pattern=r"^\+[1-9]\d{6,14}$")] | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    locale: Annotated[str, Field(max_length=35)] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    birthday: date | None = None
    signup_at: AwareDatetime | None = None
    country: Annotated[str, Field(max_length=2)] | None = None
    custom: dict[str, JsonValue] = Field(default_factory=dict)


class ContactIdentified(Payload):
    TYPE: ClassVar[str] = "contact.identified"

    user_id: Id | None = None
    anonymous_id: Id | None = None
    traits: ContactTraits = Field(default_factory=ContactTraits)


class ContactTraitsChanged(Payload):
    """A stored trait that actually changed value. Reserved: nothing emits it today (the
    orchestrator folds `contact.identified` itself; see the segmentation README)."""

    TYPE: ClassVar[str] = "contact.traits_changed"

    user_id: Id
    changed: dict[str, JsonValue]


class ContactAliased(Payload):
    """An anonymous visitor is now known: their history follows `user_id`."""

    TYPE: ClassVar[str] = "contact.aliased"

    user_id: Id
    previous_id: Id


class ConsentChanged(Payload):
    TYPE: ClassVar[str] = "contact.consent_changed"

    channel: Channel
    purpose: Purpose
    status: ConsentStatus
    origin: Literal["identify", "unsubscribe_link", "sms_keyword", "provider", "admin", "survey"]
    message_id: Id | None = None


# --- commerce --------------------------------------------------------------------------


class LineItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    product_id: Id
    sku: ShortText | None = None
    name: ShortText | None = None
    category: ShortText | None = None
    brand: ShortText | None = None
    price: Money = Decimal(0)
    quantity: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    url: Annotated[str, Field(max_length=2048)] | None = None
    image_url: Annotated[str, Field(max_length=2048)] | None = None


Items = Annotated[list[LineItem], Field(max_length=500)]


class OrderCompleted(Payload):
    TYPE: ClassVar[str] = "order.completed"

    order_id: Id
    total: Money
    currency: Currency = "EUR"
    discount: Money = Decimal(0)
    coupon: ShortText | None = None
    cart_id: Id | None = None
    items: Items = Field(default_factory=list)


class OrderRefunded(Payload):
    """A refund or cancellation; `amount` is what is taken off the contact's net spend."""

    TYPE: ClassVar[str] = "order.refunded"

    order_id: Id
    amount: Money
    currency: Currency = "EUR"
    items: Items = Field(default_factory=list)


class CartChanged(Payload):
    """The full item list after the change: consumers never have to replay deltas."""

    TYPE: ClassVar[str] = "cart.changed"

    cart_id: Id
    items: Items
    total: Money
    currency: Currency = "EUR"
    change: Literal["product_added", "product_removed", "viewed", "merged"]


class CheckoutStarted(Payload):
    TYPE: ClassVar[str] = "checkout.started"

    cart_id: Id | None = None
    order_id: Id | None = None
    total: Money | None = None
    currency: Currency = "EUR"
    items: Items = Field(default_factory=list)


class CustomTracked(Payload):
    """Any other `track` call; plans can use its name as a trigger."""

    TYPE: ClassVar[str] = "custom.tracked"

    name: ShortText
    properties: dict[str, JsonValue] = Field(default_factory=dict)


class PageViewed(Payload):
    TYPE: ClassVar[str] = "page.viewed"

    name: ShortText | None = None
    category: ShortText | None = None
    url: Annotated[str, Field(max_length=2048)] | None = None
    properties: dict[str, JsonValue] = Field(default_factory=dict)


# --- engagement ------------------------------------------------------------------------


class EmailOpened(Payload):
    """An open, from our pixel (message id) or an external ESP (plan + step)."""

    TYPE: ClassVar[str] = "email.opened"

    message_id: Id | None = None
    plan: ShortText | None = None
    step: ShortText | None = None


class LinkClicked(Payload):
    TYPE: ClassVar[str] = "email.link_clicked"

    message_id: Id | None = None
    plan: ShortText | None = None
    step: ShortText | None = None
    url: Annotated[str, Field(max_length=2048)] | None = None


class SurveyAnswered(Payload):
    TYPE: ClassVar[str] = "survey.answered"

    answer_id: Id
    order_id: Id
    answer: SurveyAnswer | None = None
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    comment: Annotated[str, Field(max_length=4000)] | None = None
    message_id: Id | None = None
    origin: Literal["email", "api"] = "email"


# --- messages --------------------------------------------------------------------------


class MessageRequested(Payload):
    """The orchestrator asks the sender for one message; `message_id` is deterministic."""

    TYPE: ClassVar[str] = "message.requested"

    message_id: Id
    plan: ShortText
    step: ShortText
    plan_instance: Id
    variant: ShortText | None = None
    channel: Channel
    purpose: Purpose
    locale: Annotated[str, Field(max_length=35)] | None = None
    context: dict[str, JsonValue] = Field(default_factory=dict)
    not_after: AwareDatetime | None = None


class MessageSent(Payload):
    TYPE: ClassVar[str] = "message.sent"

    message_id: Id
    channel: Channel
    plan: ShortText | None = None
    step: ShortText | None = None
    provider_message_id: ShortText | None = None


class MessageDelivered(Payload):
    TYPE: ClassVar[str] = "message.delivered"

    message_id: Id
    channel: Channel


class MessageFailed(Payload):
    TYPE: ClassVar[str] = "message.failed"

    message_id: Id
    channel: Channel
    reason: Annotated[str, Field(max_length=1000)]
    permanent: bool
    plan: ShortText | None = None
    step: ShortText | None = None


class MessageBounced(Payload):
    TYPE: ClassVar[str] = "message.bounced"

    message_id: Id
    channel: Channel
    kind: Literal["hard", "soft"]
    code: ShortText | None = None
    address: Annotated[str, Field(max_length=320)] | None = None


# --- segmentation ----------------------------------------------------------------------


class LifecycleStageChanged(Payload):
    TYPE: ClassVar[str] = "segment.lifecycle_changed"

    user_id: Id
    previous: LifecycleStage | None = None
    current: LifecycleStage
    as_of: AwareDatetime


class LoyaltyTierChanged(Payload):
    TYPE: ClassVar[str] = "segment.tier_changed"

    user_id: Id
    previous: LoyaltyTier | None = None
    current: LoyaltyTier
    as_of: AwareDatetime


class RfmSegmentChanged(Payload):
    TYPE: ClassVar[str] = "segment.rfm_changed"

    user_id: Id
    previous: RfmSegment | None = None
    current: RfmSegment
    r: Annotated[int, Field(ge=1, le=5)]
    f: Annotated[int, Field(ge=1, le=5)]
    m: Annotated[int, Field(ge=1, le=5)]
    as_of: AwareDatetime


PAYLOAD_TYPES: dict[str, type[Payload]] = {
    cls.TYPE: cls
    for cls in (
        ContactIdentified,
        ContactTraitsChanged,
        ContactAliased,
        ConsentChanged,
        OrderCompleted,
        OrderRefunded,
        CartChanged,
        CheckoutStarted,
        CustomTracked,
        PageViewed,
        EmailOpened,
        LinkClicked,
        SurveyAnswered,
        MessageRequested,
        MessageSent,
        MessageDelivered,
        MessageFailed,
        MessageBounced,
        LifecycleStageChanged,
        LoyaltyTierChanged,
        RfmSegmentChanged,
    )
}


def payload_class(type_name: str) -> type[Payload]:
    return PAYLOAD_TYPES.get(type_name, UnknownPayload)


M = TypeVar("M", bound=BaseModel)


def checked_model(cls: type[M], values: dict[str, Any]) -> M:
    """`cls(**values)` for values the caller has already proven valid, without validation.

    It builds what pydantic's `model_construct` builds (without its per-field Python
    loop), and equals the validated model. `values` names every field of `cls`, in
    declaration order, as validation would store them (tests compare the two).
    """
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", values)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


def as_json_dict(payload: Payload) -> dict[str, Any]:
    return payload.model_dump(mode="json")
