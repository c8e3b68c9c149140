"""Segment HTTP Tracking API messages -> typed Relance events (pure).

Used by ingest (per request) and by `relance simulate` (over a Segment-format JSONL file).

Two layers:
- `map_message` validates one message and returns what it produces, in order: ready
  `Event`s, plus `CartDelta` / `CartMerge` items that need the cart's current contents.
- `CartBook` folds those into full `CartChanged` events (a cart event always carries the
  full item list). Ingest loads a `CartBook` from PostgreSQL per request; a simulation
  keeps one for the whole run. `segment_to_events` is both steps with a fresh book.

Event ids are `deterministic_id(shop_id, messageId, str(n))` for the n-th event of a
message, so a retried message produces the same events and downstream inboxes dedupe.
Cart merges (state dependent) use `deterministic_id(shop_id, messageId, "merge", cart_id)`.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import ValidationError

from relance_events.envelope import TraceContext, deterministic_id, deterministic_id_str
from relance_events.errors import EventError
from relance_events.event import Event, checked_event, new_event
from relance_events.payloads import (
    CartChanged,
    CheckoutStarted,
    ConsentChanged,
    ContactAliased,
    ContactIdentified,
    ContactTraits,
    CustomTracked,
    EmailOpened,
    LineItem,
    LinkClicked,
    OrderCompleted,
    OrderRefunded,
    PageViewed,
    Payload,
    checked_model,
)
from relance_events.wire import EncodedEvent, encode_envelope, fields_json, payload_json

SOURCE = "segment"
MAX_AGE = timedelta(days=30)
MAX_AHEAD = timedelta(minutes=5)
MAX_ID_LENGTH = 128
MAX_MESSAGE_ID_LENGTH = 128
MAX_PRODUCTS = 500
_MONEY_STEP = Decimal("0.0001")
_MONEY_MAX = Decimal("9999999999")
_ZERO = Decimal(0)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")

MessageType = Literal["identify", "track", "alias", "page", "screen", "group"]
MESSAGE_TYPES: tuple[MessageType, ...] = ("identify", "track", "alias", "page", "screen", "group")
CartChange = Literal["product_added", "product_removed", "viewed"]

_KNOWN_TRAITS = frozenset(
    {
        "email",
        "phone",
        "first_name",
        "firstName",
        "last_name",
        "lastName",
        "locale",
        "timezone",
        "birthday",
        "createdAt",
        "created_at",
        "country",
        "email_consent",
        "sms_consent",
    }
)


class SegmentValidationError(EventError):
    """One or more fields of one or more messages are invalid.

    `.errors` is a list of `{"index": i, "field": "properties.total", "reason": "..."}`.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5]))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class CartDelta:
    """A cart event that needs the cart's current contents to become a `CartChanged`.

    `cart_id` None means the contact's one open cart. With `replace`, `items` is the full
    list (Cart Viewed with products); otherwise items are added or removed.
    """

    event_id: uuid.UUID
    shop_id: str
    contact_key: str
    cart_id: str | None
    change: CartChange
    items: tuple[LineItem, ...]
    replace: bool
    currency: str | None
    occurred_at: datetime
    received_at: datetime
    source: str


@dataclass(frozen=True, slots=True)
class CartMerge:
    """An anonymous visitor became `to_key`: their carts follow."""

    shop_id: str
    message_id: str
    from_keys: tuple[str, ...]
    to_key: str
    occurred_at: datetime
    received_at: datetime
    source: str


Produced: TypeAlias = Event[Any] | CartDelta | CartMerge
# What `map_messages_encoded` produces: events in their wire form instead of models.
EncodedProduced: TypeAlias = EncodedEvent | CartDelta | CartMerge


# --- validation helpers ----------------------------------------------------------------


class _Errors:
    def __init__(self, index: int) -> None:
        self.index = index
        self.items: list[dict[str, Any]] = []

    def add(self, field_name: str, reason: str) -> None:
        self.items.append({"index": self.index, "field": field_name, "reason": reason})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _id(value: object, where: str, errs: _Errors, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            errs.add(where, "required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        errs.add(where, "must be a string or an integer")
        return None
    text = str(value).strip()
    if not text:
        errs.add(where, "must not be empty")
        return None
    if len(text) > MAX_ID_LENGTH:
        errs.add(where, f"at most {MAX_ID_LENGTH} characters")
        return None
    return text


def _text(value: object, where: str, errs: _Errors, max_length: int = 256) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errs.add(where, "must be a string")
        return None
    if len(value) > max_length:
        errs.add(where, f"at most {max_length} characters")
        return None
    return value


def _money(value: object, where: str, errs: _Errors) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            errs.add(where, "must be a number")
            return None
    elif _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            errs.add(where, "must be a finite number")
            return None
        number = Decimal(str(value))
    else:
        errs.add(where, "must be a number")
        return None
    if not number.is_finite() or abs(number) > _MONEY_MAX:
        errs.add(where, f"must be a finite number below {_MONEY_MAX}")
        return None
    if number < 0:
        errs.add(where, "must not be negative")
        return None
    return number.quantize(_MONEY_STEP, rounding=ROUND_HALF_EVEN)


def _quantity(value: object, where: str, errs: _Errors) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        errs.add(where, "must be an integer")
        return None
    if not 0 <= value <= 1_000_000:
        errs.add(where, "must be between 0 and 1000000")
        return None
    return value


def _currency(value: object, where: str, errs: _Errors) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _CURRENCY.match(value):
        errs.add(where, "must be an ISO 4217 code such as EUR")
        return None
    return value.upper()


def _timestamp(value: object, where: str, errs: _Errors) -> datetime | None:
    if not isinstance(value, str):
        errs.add(where, "must be an ISO 8601 string")
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        errs.add(where, "must be an ISO 8601 date-time")
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        errs.add(where, "must carry a timezone offset")
        return None
    return parsed


def _object(value: object, where: str, errs: _Errors) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errs.add(where, "must be an object")
        return {}
    return value


def _line_item(raw: object, where: str, errs: _Errors) -> LineItem | None:
    if not isinstance(raw, dict):
        errs.add(where, "must be an object")
        return None
    before = len(errs.items)
    product_id = _id(
        raw.get("product_id", raw.get("id", raw.get("sku"))),
        f"{where}.product_id",
        errs,
        required=True,
    )
    sku = _text(raw.get("sku"), f"{where}.sku", errs)
    if raw.get("sku") is not None and _is_number(raw.get("sku")):
        errs.items.pop()
        sku = str(raw["sku"])
    name = _text(raw.get("name"), f"{where}.name", errs)
    category = _text(raw.get("category"), f"{where}.category", errs)
    brand = _text(raw.get("brand"), f"{where}.brand", errs)
    price = _money(raw.get("price"), f"{where}.price", errs)
    quantity = _quantity(raw.get("quantity"), f"{where}.quantity", errs)
    url = _text(raw.get("url"), f"{where}.url", errs, 2048)
    image_url = _text(raw.get("image_url"), f"{where}.image_url", errs, 2048)
    if len(errs.items) > before or product_id is None:
        return None
    return LineItem(
        product_id=product_id,
        sku=sku,
        name=name,
        category=category,
        brand=brand,
        price=price if price is not None else Decimal(0),
        quantity=quantity if quantity is not None else 1,
        url=url,
        image_url=image_url,
    )


def _products(value: object, where: str, errs: _Errors) -> list[LineItem]:
    if value is None:
        return []
    if not isinstance(value, list):
        errs.add(where, "must be an array")
        return []
    if len(value) > MAX_PRODUCTS:
        errs.add(where, f"at most {MAX_PRODUCTS} products")
        return []
    items = [_line_item(raw, f"{where}.{i}", errs) for i, raw in enumerate(value)]
    return [item for item in items if item is not None]


def cart_total(items: Iterable[LineItem]) -> Decimal:
    total = sum((item.price * item.quantity for item in items), Decimal(0))
    return total.quantize(_MONEY_STEP, rounding=ROUND_HALF_EVEN)


# --- mapping ---------------------------------------------------------------------------


@dataclass
class _Context:
    shop_id: str
    message_id: str
    contact_key: str
    occurred_at: datetime
    received_at: datetime
    source: str
    trace: TraceContext | None
    # The envelope's fields are known valid (see `_envelope_checked`): no second look.
    checked: bool
    # Events go out in their wire form (`EncodedEvent`), without their models.
    encoded: bool
    produced: list[Produced | EncodedEvent] = field(default_factory=list)

    def next_id(self) -> uuid.UUID:
        return deterministic_id(self.shop_id, self.message_id, str(len(self.produced)))

    def emit(self, payload: Payload) -> None:
        if self.encoded and self.checked:
            cart_id = payload.cart_id if isinstance(payload, OrderCompleted) else None
            self._emit_encoded(payload.TYPE, payload.SCHEMA_VERSION, payload_json(payload), cart_id)
            return
        event = (checked_event if self.checked else new_event)(
            payload,
            shop_id=self.shop_id,
            contact_key=self.contact_key,
            source=self.source,
            occurred_at=self.occurred_at,
            received_at=self.received_at,
            event_id=self.next_id(),
            trace=self.trace,
        )
        self.produced.append(EncodedEvent.of(event) if self.encoded else event)

    def emit_fields(self, cls: type[Payload], fields: dict[str, Any]) -> None:
        """`emit(cls(**fields))` for fields valid by construction (see `checked_model`)."""
        if self.encoded and self.checked:
            cart_id = fields["cart_id"] if cls is OrderCompleted else None
            self._emit_encoded(cls.TYPE, cls.SCHEMA_VERSION, fields_json(fields), cart_id)
        else:
            self.emit(checked_model(cls, fields))

    def _emit_encoded(
        self,
        type_name: str,
        schema_version: int,
        payload: Any,
        cart_id: str | None,
    ) -> None:
        event_id = deterministic_id_str(self.shop_id, self.message_id, str(len(self.produced)))
        value = encode_envelope(
            event_id=event_id,
            type_name=type_name,
            schema_version=schema_version,
            occurred_at=self.occurred_at,
            received_at=self.received_at,
            shop_id=self.shop_id,
            contact_key=self.contact_key,
            source=self.source,
            trace=self.trace,
            payload=payload,
        )
        self.produced.append(
            EncodedEvent(
                event_id, type_name, self.shop_id, self.contact_key, self.trace, value, cart_id
            )
        )

    def cart(
        self,
        change: CartChange,
        cart_id: str | None,
        items: Sequence[LineItem],
        *,
        replace: bool,
        currency: str | None,
    ) -> None:
        self.produced.append(
            CartDelta(
                event_id=self.next_id(),
                shop_id=self.shop_id,
                contact_key=self.contact_key,
                cart_id=cart_id,
                change=change,
                items=tuple(items),
                replace=replace,
                currency=currency,
                occurred_at=self.occurred_at,
                received_at=self.received_at,
                source=self.source,
            )
        )

    def merge(self, from_ids: Sequence[str], to_key: str) -> None:
        keys = tuple(dict.fromkeys(k for i in from_ids for k in (f"anon:{i}", i) if k != to_key))
        self.produced.append(
            CartMerge(
                shop_id=self.shop_id,
                message_id=self.message_id,
                from_keys=keys,
                to_key=to_key,
                occurred_at=self.occurred_at,
                received_at=self.received_at,
                source=self.source,
            )
        )


def map_message(
    message: object,
    *,
    shop_id: str,
    received_at: datetime,
    index: int = 0,
    message_type: MessageType | None = None,
    max_age: timedelta | None = MAX_AGE,
    max_ahead: timedelta | None = MAX_AHEAD,
    source: str = SOURCE,
    trace: TraceContext | None = None,
) -> list[Produced]:
    """Validate one message and return what it produces, in order.

    `message_type` forces the type (the endpoint names it); otherwise `type` is read
    (batch items). `received_at` is "now" for the timestamp window; pass `max_age=None`
    to replay history. Events carry `trace` (cart items get it when resolved). Raises
    `SegmentValidationError` naming every bad field.
    """
    produced = _map(
        message,
        shop_id,
        received_at,
        index,
        message_type,
        max_age,
        max_ahead,
        source,
        trace,
        encoded=False,
    )
    return produced  # type: ignore[return-value]  # models only, as encoded=False


def map_messages_encoded(
    messages: Iterable[tuple[MessageType | None, object]],
    *,
    shop_id: str,
    received_at: datetime,
    max_age: timedelta | None = MAX_AGE,
    max_ahead: timedelta | None = MAX_AHEAD,
    source: str = SOURCE,
    trace: TraceContext | None = None,
) -> list[EncodedProduced]:
    """`map_message` over a request's (type, message) pairs, each indexed by its position,
    with the events in their wire form: for a producer that publishes them as they are
    (ingest), saving the building and serializing of each model. All they produce, in
    order, or `SegmentValidationError` naming every bad field of them all."""
    mapper = _EncodedMapper(shop_id, received_at, max_age, max_ahead, source, trace)
    produced: list[EncodedProduced] = []
    errors: list[dict[str, Any]] = []
    for index, (message_type, message) in enumerate(messages):
        try:
            produced.extend(mapper.map(message, index, message_type))
        except SegmentValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise SegmentValidationError(errors)
    return produced


class _EncodedMapper:
    """The wire path for the messages of one request: `_plain_track` where it answers,
    `_map` otherwise; what depends only on the request is worked out once."""

    def __init__(
        self,
        shop_id: str,
        received_at: datetime,
        max_age: timedelta | None,
        max_ahead: timedelta | None,
        source: str,
        trace: TraceContext | None,
    ) -> None:
        self.shop_id = shop_id
        self.received_at = received_at
        self.max_age = max_age
        self.max_ahead = max_ahead
        self.source = source
        self.trace = trace
        self.plain_envelope = _envelope_checked(shop_id, source, received_at)
        self.earliest, self.latest = _window(received_at, max_age, max_ahead)

    def map(
        self, message: object, index: int, message_type: MessageType | None
    ) -> list[EncodedProduced]:
        if self.plain_envelope and type(message) is dict:
            plain = _plain_track(
                message,
                self.shop_id,
                self.received_at,
                message_type,
                self.earliest,
                self.latest,
                self.source,
                self.trace,
            )
            if plain is not None:
                return [plain]
        produced = _map(
            message,
            self.shop_id,
            self.received_at,
            index,
            message_type,
            self.max_age,
            self.max_ahead,
            self.source,
            self.trace,
            encoded=True,
        )
        return produced  # type: ignore[return-value]  # wire forms only, as encoded=True


def _map(
    message: object,
    shop_id: str,
    received_at: datetime,
    index: int,
    message_type: MessageType | None,
    max_age: timedelta | None,
    max_ahead: timedelta | None,
    source: str,
    trace: TraceContext | None,
    *,
    encoded: bool,
) -> list[Produced | EncodedEvent]:
    errs = _Errors(index)
    if not isinstance(message, dict):
        raise SegmentValidationError([{"index": index, "field": "", "reason": "not an object"}])
    kind: str | None = message_type
    if kind is None:
        raw_type = message.get("type")
        if raw_type not in MESSAGE_TYPES:
            errs.add("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
            raise SegmentValidationError(errs.items)
        kind = raw_type

    message_id = _id(message.get("messageId"), "messageId", errs, required=True)
    if message_id is not None and len(message_id) > MAX_MESSAGE_ID_LENGTH:
        errs.add("messageId", f"at most {MAX_MESSAGE_ID_LENGTH} characters")
    user_id = _id(message.get("userId"), "userId", errs)
    anonymous_id = _id(message.get("anonymousId"), "anonymousId", errs)
    previous_id: str | None = None
    if kind == "alias":
        previous_id = _id(message.get("previousId"), "previousId", errs, required=True)
        if user_id is None and message.get("userId") is None:
            errs.add("userId", "required")
    elif message.get("userId") is None and message.get("anonymousId") is None:
        errs.add("userId", "userId or anonymousId is required")

    occurred_at = received_at
    if message.get("timestamp") is not None:
        parsed = _timestamp(message["timestamp"], "timestamp", errs)
        if parsed is not None:
            if max_age is not None and parsed < received_at - max_age:
                errs.add("timestamp", f"more than {max_age.days} days in the past")
            elif max_ahead is not None and parsed > received_at + max_ahead:
                errs.add("timestamp", "too far in the future")
            else:
                occurred_at = parsed
    _object(message.get("context"), "context", errs)
    if errs.items:
        raise SegmentValidationError(errs.items)
    assert message_id is not None

    contact_key = user_id if user_id is not None else f"anon:{anonymous_id}"
    checked = _envelope_checked(shop_id, source, received_at)
    ctx = _Context(
        shop_id, message_id, contact_key, occurred_at, received_at, source, trace, checked, encoded
    )

    try:
        if kind == "identify":
            _identify(message, ctx, errs, user_id, anonymous_id)
        elif kind == "track":
            _track(message, ctx, errs)
        elif kind == "alias":
            assert previous_id is not None
            assert user_id is not None
            ctx.emit(ContactAliased(user_id=user_id, previous_id=previous_id))
            ctx.merge([previous_id], user_id)
        elif kind in ("page", "screen"):
            _page(message, ctx, errs)
        elif kind == "group":
            _object(message.get("traits"), "traits", errs)
        else:  # pragma: no cover - kind is checked against MESSAGE_TYPES above
            raise AssertionError(kind)
    except ValidationError as exc:
        for detail in exc.errors():
            loc = ".".join(str(p) for p in detail["loc"])
            errs.add(loc or "properties", detail["msg"])
    if errs.items:
        raise SegmentValidationError(errs.items)
    return ctx.produced


# `track` names `_track` maps to a typed payload; any other is a `CustomTracked`.
_TYPED_TRACKS = frozenset(
    {
        "Order Completed",
        "Order Refunded",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Checkout Started",
        "Email Opened",
        "Email Link Clicked",
    }
)


def _plain_id(value: object, max_length: int = MAX_ID_LENGTH) -> bool:
    """A string id `_id` takes as it is (not an integer, nothing to strip)."""
    return type(value) is str and 0 < len(value) <= max_length and value.strip() == value


def _plain_currency(value: object) -> bool:
    """A currency `_currency` takes (and upper-cases) without an error."""
    return type(value) is str and len(value) == 3 and value.isascii() and value.isalpha()


def _window(
    received_at: datetime, max_age: timedelta | None, max_ahead: timedelta | None
) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest timestamps `_map` takes (None: no bound)."""
    return (
        received_at - max_age if max_age is not None else None,
        received_at + max_ahead if max_ahead is not None else None,
    )


def _plain_track(
    message: dict[str, Any],
    shop_id: str,
    received_at: datetime,
    message_type: MessageType | None,
    earliest: datetime | None,
    latest: datetime | None,
    source: str,
    trace: TraceContext | None,
) -> EncodedEvent | None:
    """The one event of a plain, valid `track` message, or None: then `_map` decides.
    The caller has checked the envelope's own fields (`_envelope_checked`).

    Most of what shops send is orders and custom events from a known user, every field
    plain: this answers those with the checks `_map` makes, in a third of its time, and
    leaves every other message (any error included) to it. A property test holds the
    two equal wherever this answers.
    """
    kind = message_type if message_type is not None else message.get("type")
    message_id = message.get("messageId")
    user_id = message.get("userId")
    if (
        kind != "track"
        or not _plain_id(message_id, min(MAX_ID_LENGTH, MAX_MESSAGE_ID_LENGTH))
        or not _plain_id(user_id)
        or message.get("anonymousId") is not None
    ):
        return None
    context = message.get("context")
    if context is not None and type(context) is not dict:
        return None
    occurred_at = received_at
    timestamp = message.get("timestamp")
    if timestamp is not None:
        if type(timestamp) is not str:
            return None
        text = timestamp.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            occurred_at = datetime.fromisoformat(text)
        except ValueError:
            return None
        if occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
            return None
        if (earliest is not None and occurred_at < earliest) or (
            latest is not None and occurred_at > latest
        ):
            return None
    name = message.get("event")
    if type(name) is not str or not name.strip() or len(name) > 256:
        return None
    props = message.get("properties")
    if props is None:
        props = {}
    elif type(props) is not dict:
        return None
    cart_id = props.get("cart_id")
    currency = props.get("currency")
    if (cart_id is not None and not _plain_id(cart_id)) or (
        currency is not None and not _plain_currency(currency)
    ):
        return None
    payload: orjson.Fragment | dict[str, Any]
    if name == "Order Completed":
        fields = _plain_order(props, cart_id, currency)
        if fields is None:
            return None
        type_name, version, payload = OrderCompleted.TYPE, OrderCompleted.SCHEMA_VERSION, fields
    elif name in _TYPED_TRACKS:
        return None
    else:
        try:
            custom = CustomTracked(name=name, properties=props)
        except ValidationError:
            return None
        type_name, version = CustomTracked.TYPE, CustomTracked.SCHEMA_VERSION
        payload = payload_json(custom)
    event_id = deterministic_id_str(shop_id, message_id, "0")  # type: ignore[arg-type]
    value = encode_envelope(
        event_id=event_id,
        type_name=type_name,
        schema_version=version,
        occurred_at=occurred_at,
        received_at=received_at,
        shop_id=shop_id,
        contact_key=user_id,  # type: ignore[arg-type]
        source=source,
        trace=trace,
        payload=payload,
    )
    order_cart = cart_id if type_name == OrderCompleted.TYPE else None
    return EncodedEvent(event_id, type_name, shop_id, user_id, trace, value, order_cart)  # type: ignore[arg-type]


def _plain_order(
    props: dict[str, Any], cart_id: str | None, currency: str | None
) -> dict[str, Any] | None:
    """`fields_json` of a plain order's payload, or None."""
    order_id = props.get("order_id")
    coupon = props.get("coupon")
    if not _plain_id(order_id) or (
        coupon is not None and (type(coupon) is not str or len(coupon) > 256)
    ):
        return None
    products = props.get("products")
    lines: list[dict[str, Any]] = []
    if products is not None:
        if type(products) is not list or len(products) > MAX_PRODUCTS:
            return None
        for raw in products:
            line = _plain_line(raw)
            if line is None:
                return None
            lines.append(line)
    raw_total = props.get("total")
    if raw_total is None:
        raw_total = props.get("revenue")
    if raw_total is not None:
        total = _plain_money(raw_total)
    elif lines and "total" not in props and "revenue" not in props:
        total = sum((line["price"] * line["quantity"] for line in lines), _ZERO).quantize(
            _MONEY_STEP, rounding=ROUND_HALF_EVEN
        )
        if total > _MONEY_MAX:
            return None  # pydantic's error, from `_map`
    else:
        return None
    raw_discount = props.get("discount")
    discount = _ZERO if raw_discount is None else _plain_money(raw_discount)
    if total is None or discount is None:
        return None
    fields: dict[str, Any] = {
        "order_id": order_id,
        "total": str(total),
        "currency": currency.upper() if currency is not None else "EUR",
        "discount": str(discount or _ZERO),  # as `_track`: a zero discount is `_ZERO`
    }
    if coupon is not None:
        fields["coupon"] = coupon
    if cart_id is not None:
        fields["cart_id"] = cart_id
    for line in lines:
        line["price"] = str(line["price"])
    fields["items"] = lines
    return fields


def _plain_line(raw: object) -> dict[str, Any] | None:
    """A product line `_line_item` takes without an error, as its model's JSON would
    hold it (`price` still a `Decimal`), else None."""
    if type(raw) is not dict:
        return None
    product_id = raw.get("product_id", raw.get("id", raw.get("sku")))
    if not _plain_id(product_id):
        return None
    line: dict[str, Any] = {"product_id": product_id}
    for key in ("sku", "name", "category", "brand"):
        text = raw.get(key)
        if text is not None:
            if type(text) is not str or len(text) > 256:
                return None
            line[key] = text
    raw_price = raw.get("price")
    price = _ZERO if raw_price is None else _plain_money(raw_price)
    quantity = raw.get("quantity")
    if quantity is None:
        quantity = 1
    if price is None or type(quantity) is not int or not 0 <= quantity <= 1_000_000:
        return None
    line["price"] = price
    line["quantity"] = quantity
    for key in ("url", "image_url"):
        text = raw.get(key)
        if text is not None:
            if type(text) is not str or len(text) > 2048:
                return None
            line[key] = text
    return line


def _plain_money(value: object) -> Decimal | None:
    """What `_money` makes of an amount it takes without an error, else None."""
    kind = type(value)
    if kind is int:
        number = Decimal(value)  # type: ignore[arg-type]  # as Decimal(str(value))
    elif kind is float or kind is str:
        try:
            number = Decimal(value.strip() if kind is str else str(value))  # type: ignore[attr-defined]
        except InvalidOperation:
            return None
    else:
        return None
    # NaN and infinities are not finite; -0 passes, as in `_money`.
    if not number.is_finite() or number < 0 or number > _MONEY_MAX:
        return None
    return number.quantize(_MONEY_STEP, rounding=ROUND_HALF_EVEN)


def _envelope_checked(shop_id: str, source: str, received_at: datetime) -> bool:
    """Whether the envelope of this message's events is valid without pydantic's check.

    The rest is valid by construction: ids come from `_id` (at most 128 characters, so
    a contact key is at most 133), and a parsed timestamp carries an offset.
    """
    return (
        0 < len(shop_id) <= 64
        and 0 < len(source) <= 64
        and received_at.tzinfo is not None
        and received_at.utcoffset() is not None
    )


def _consent(value: object, where: str, errs: _Errors) -> Literal["granted", "denied"] | None:
    if value is None:
        return None
    if value == "granted":
        return "granted"
    if value == "denied":
        return "denied"
    errs.add(where, "must be 'granted' or 'denied'")
    return None


def _identify(
    message: dict[str, Any],
    ctx: _Context,
    errs: _Errors,
    user_id: str | None,
    anonymous_id: str | None,
) -> None:
    traits = _object(message.get("traits"), "traits", errs)
    email = _text(traits.get("email"), "traits.email", errs, 320)
    if email is not None and "@" not in email:
        errs.add("traits.email", "must be an email address")
    phone = _text(traits.get("phone"), "traits.phone", errs, 32)
    if phone is not None and not _E164.match(phone):
        errs.add("traits.phone", "must be in E.164 format, e.g. +33612345678")
    first_name = _text(traits.get("first_name", traits.get("firstName")), "traits.first_name", errs)
    last_name = _text(traits.get("last_name", traits.get("lastName")), "traits.last_name", errs)
    locale = _text(traits.get("locale"), "traits.locale", errs, 35)
    timezone = _text(traits.get("timezone"), "traits.timezone", errs, 64)
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            errs.add("traits.timezone", "must be an IANA time zone such as Europe/Paris")
    birthday: date | None = None
    raw_birthday = traits.get("birthday")
    if raw_birthday is not None:
        if isinstance(raw_birthday, str):
            try:
                birthday = date.fromisoformat(raw_birthday[:10])
            except ValueError:
                errs.add("traits.birthday", "must be a date YYYY-MM-DD")
        else:
            errs.add("traits.birthday", "must be a date YYYY-MM-DD")
    signup_at: datetime | None = None
    raw_created = traits.get("createdAt", traits.get("created_at"))
    if raw_created is not None:
        signup_at = _timestamp(raw_created, "traits.createdAt", errs)
    country = _text(traits.get("country"), "traits.country", errs, 2)
    email_consent = _consent(traits.get("email_consent"), "traits.email_consent", errs)
    sms_consent = _consent(traits.get("sms_consent"), "traits.sms_consent", errs)
    if errs.items:
        return
    custom = {k: v for k, v in traits.items() if k not in _KNOWN_TRAITS}
    ctx.emit(
        ContactIdentified(
            user_id=user_id,
            anonymous_id=anonymous_id,
            traits=ContactTraits(
                email=email,
                phone=phone,
                first_name=first_name,
                last_name=last_name,
                locale=locale,
                timezone=timezone,
                birthday=birthday,
                signup_at=signup_at,
                country=country.upper() if country else None,
                custom=custom,
            ),
        )
    )
    for channel, status in (("email", email_consent), ("sms", sms_consent)):
        if status is not None:
            ctx.emit(
                ConsentChanged(
                    channel="email" if channel == "email" else "sms",
                    purpose="marketing",
                    status=status,
                    origin="identify",
                )
            )
    if user_id is not None and anonymous_id is not None:
        ctx.emit(ContactAliased(user_id=user_id, previous_id=anonymous_id))
        ctx.merge([anonymous_id], user_id)


def _amount(props: Mapping[str, Any], errs: _Errors, *keys: str) -> Decimal | None:
    for key in keys:
        if props.get(key) is not None:
            return _money(props[key], f"properties.{key}", errs)
    return None


def _emit_order_completed(ctx: _Context, fields: dict[str, Any]) -> None:
    """The order, validated by pydantic unless its fields are valid by construction.

    `_id` and `_text` bound the ids and the coupon, `_products` the items, and `_money`
    quantizes amounts to 4 places below `_MONEY_MAX` (a zero discount is `_ZERO`). A
    total summed from products is quantized too, but may be too large, and a currency
    `_currency` let through may not be `^[A-Z]{3}$`: those are validated, so the errors
    stay pydantic's.
    """
    currency = fields["currency"]
    if (
        fields["total"] <= _MONEY_MAX
        and len(currency) == 3
        and currency.isascii()
        and currency.isalpha()
        and currency.isupper()
    ):
        ctx.emit_fields(OrderCompleted, fields)
    else:
        ctx.emit(OrderCompleted(**fields))


def _track(message: dict[str, Any], ctx: _Context, errs: _Errors) -> None:
    name = message.get("event")
    if not isinstance(name, str) or not name.strip():
        errs.add("event", "required, a non-empty string")
        return
    if len(name) > 256:
        errs.add("event", "at most 256 characters")
        return
    props = _object(message.get("properties"), "properties", errs)
    if errs.items:
        return
    cart_id = _id(props.get("cart_id"), "properties.cart_id", errs)
    currency = _currency(props.get("currency"), "properties.currency", errs)

    if name == "Order Completed":
        order_id = _id(props.get("order_id"), "properties.order_id", errs, required=True)
        products = _products(props.get("products"), "properties.products", errs)
        total = _amount(props, errs, "total", "revenue")
        if total is None and "total" not in props and "revenue" not in props:
            if products:
                total = cart_total(products)
            else:
                errs.add("properties.total", "required (or revenue, or products)")
        discount = _money(props.get("discount"), "properties.discount", errs)
        coupon = _text(props.get("coupon"), "properties.coupon", errs)
        if errs.items or order_id is None or total is None:
            return
        _emit_order_completed(
            ctx,
            {
                "order_id": order_id,
                "total": total,
                "currency": currency or "EUR",
                "discount": discount or _ZERO,
                "coupon": coupon,
                "cart_id": cart_id,
                "items": products,
            },
        )
    elif name == "Order Refunded":
        order_id = _id(props.get("order_id"), "properties.order_id", errs, required=True)
        products = _products(props.get("products"), "properties.products", errs)
        amount = _amount(props, errs, "total", "revenue", "value", "amount")
        if amount is None and not any(k in props for k in ("total", "revenue", "value", "amount")):
            amount = cart_total(products)
        if errs.items or order_id is None or amount is None:
            return
        ctx.emit(
            OrderRefunded(
                order_id=order_id, amount=amount, currency=currency or "EUR", items=products
            )
        )
    elif name in ("Product Added", "Product Removed"):
        item = _line_item(props, "properties", errs)
        if errs.items or item is None:
            return
        change: CartChange = "product_added" if name == "Product Added" else "product_removed"
        ctx.cart(change, cart_id, [item], replace=False, currency=currency)
    elif name == "Cart Viewed":
        has_products = props.get("products") is not None
        products = _products(props.get("products"), "properties.products", errs)
        if errs.items:
            return
        ctx.cart("viewed", cart_id, products, replace=has_products, currency=currency)
    elif name == "Checkout Started":
        order_id = _id(props.get("order_id"), "properties.order_id", errs)
        products = _products(props.get("products"), "properties.products", errs)
        total = _amount(props, errs, "total", "revenue", "value")
        if errs.items:
            return
        ctx.emit(
            CheckoutStarted(
                cart_id=cart_id,
                order_id=order_id,
                total=total,
                currency=currency or "EUR",
                items=products,
            )
        )
    elif name in ("Email Opened", "Email Link Clicked"):
        message_id = _id(
            props.get("message_id", props.get("email_id")), "properties.message_id", errs
        )
        plan = _text(props.get("plan", props.get("campaign_name")), "properties.plan", errs)
        step = _text(props.get("step"), "properties.step", errs)
        if message_id is None and (plan is None or step is None) and not errs.items:
            errs.add("properties.message_id", "message_id, or plan and step, are required")
        if name == "Email Opened":
            if not errs.items:
                ctx.emit(EmailOpened(message_id=message_id, plan=plan, step=step))
            return
        url = _text(props.get("url", props.get("link_url")), "properties.url", errs, 2048)
        if not errs.items:
            ctx.emit(LinkClicked(message_id=message_id, plan=plan, step=step, url=url))
    else:
        ctx.emit(CustomTracked(name=name, properties=props))


def _page(message: dict[str, Any], ctx: _Context, errs: _Errors) -> None:
    props = _object(message.get("properties"), "properties", errs)
    name = _text(message.get("name", props.get("name")), "name", errs)
    category = _text(message.get("category", props.get("category")), "category", errs)
    url = _text(props.get("url"), "properties.url", errs, 2048)
    if not errs.items:
        ctx.emit(PageViewed(name=name, category=category, url=url, properties=props))


# --- carts -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cart:
    cart_id: str
    contact_key: str
    items: tuple[LineItem, ...]
    currency: str
    is_open: bool


def fold_cart(items: Sequence[LineItem], delta: CartDelta) -> tuple[LineItem, ...]:
    """The cart's full item list after `delta`; lines are keyed by (product_id, sku)."""
    if delta.replace:
        return tuple(delta.items)
    lines = list(items)
    for change in delta.items:
        at = next(
            (
                i
                for i, line in enumerate(lines)
                if line.product_id == change.product_id and line.sku == change.sku
            ),
            None,
        )
        if delta.change == "product_added":
            if at is None:
                lines.append(change)
            else:
                quantity = min(lines[at].quantity + change.quantity, 1_000_000)
                lines[at] = change.model_copy(update={"quantity": quantity})
        elif delta.change == "product_removed" and at is not None:
            remaining = lines[at].quantity - change.quantity
            if remaining > 0:
                lines[at] = lines[at].model_copy(update={"quantity": remaining})
            else:
                del lines[at]
    return tuple(lines[:MAX_PRODUCTS])


@dataclass
class CartBook:
    """Carts of one shop, in memory; `resolve` turns deltas into full `CartChanged` events.

    `changed` names carts to persist; `applied` holds cart event ids already folded, so a
    retried message re-emits the same event (deduped downstream) without folding twice.
    """

    shop_id: str
    carts: dict[str, Cart] = field(default_factory=dict)
    applied: set[uuid.UUID] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    newly_applied: set[uuid.UUID] = field(default_factory=set)

    def open_cart_of(self, contact_key: str) -> Cart | None:
        for cart in self.carts.values():
            if cart.contact_key == contact_key and cart.is_open:
                return cart
        return None

    def _put(self, cart: Cart) -> None:
        self.carts[cart.cart_id] = cart
        self.changed.add(cart.cart_id)

    def resolve(self, produced: Iterable[Produced]) -> list[Event[Any]]:
        events: list[Event[Any]] = []
        for item in produced:
            if isinstance(item, CartDelta):
                events.append(self._apply_delta(item))
            elif isinstance(item, CartMerge):
                events.extend(self._merge(item))
            else:
                events.append(self._on_event(item))
        return events

    def _apply_delta(self, delta: CartDelta) -> Event[CartChanged]:
        if delta.cart_id is not None:
            cart = self.carts.get(delta.cart_id)
        else:
            cart = self.open_cart_of(delta.contact_key)
        if cart is None:
            cart = Cart(
                cart_id=delta.cart_id or str(delta.event_id),
                contact_key=delta.contact_key,
                items=(),
                currency=delta.currency or "EUR",
                is_open=True,
            )
        if delta.event_id not in self.applied:
            cart = Cart(
                cart_id=cart.cart_id,
                contact_key=cart.contact_key,
                items=fold_cart(cart.items, delta),
                currency=delta.currency or cart.currency,
                is_open=True,
            )
            self._put(cart)
            self.applied.add(delta.event_id)
            self.newly_applied.add(delta.event_id)
        return new_event(
            CartChanged(
                cart_id=cart.cart_id,
                items=list(cart.items),
                total=cart_total(cart.items),
                currency=cart.currency,
                change=delta.change,
            ),
            shop_id=delta.shop_id,
            contact_key=cart.contact_key,
            source=delta.source,
            occurred_at=delta.occurred_at,
            received_at=delta.received_at,
            event_id=delta.event_id,
        )

    def _on_event(self, event: Event[Any]) -> Event[Any]:
        payload = event.payload
        if not isinstance(payload, OrderCompleted):
            return event
        cart = (
            self.carts.get(payload.cart_id)
            if payload.cart_id is not None
            else self.open_cart_of(event.contact_key)
        )
        if cart is None:
            return event
        if cart.is_open:
            self._put(
                Cart(cart.cart_id, cart.contact_key, cart.items, cart.currency, is_open=False)
            )
        if payload.cart_id is None:
            return event.model_copy(
                update={"payload": payload.model_copy(update={"cart_id": cart.cart_id})}
            )
        return event

    def _merge(self, merge: CartMerge) -> list[Event[Any]]:
        events: list[Event[Any]] = []
        target = self.open_cart_of(merge.to_key)
        moving = sorted(
            (c for c in self.carts.values() if c.contact_key in merge.from_keys),
            key=lambda c: c.cart_id,
        )
        for cart in moving:
            if cart.is_open and target is not None and cart.cart_id != target.cart_id:
                items: tuple[LineItem, ...] = target.items
                for line in cart.items:
                    items = fold_cart(items, _added(line, merge))
                target = Cart(target.cart_id, merge.to_key, items, target.currency, True)
                self._put(target)
                self._put(Cart(cart.cart_id, merge.to_key, (), cart.currency, is_open=False))
                emitted = target
            else:
                emitted = Cart(cart.cart_id, merge.to_key, cart.items, cart.currency, cart.is_open)
                self._put(emitted)
                if emitted.is_open:
                    target = emitted
            if emitted.is_open:
                events.append(
                    new_event(
                        CartChanged(
                            cart_id=emitted.cart_id,
                            items=list(emitted.items),
                            total=cart_total(emitted.items),
                            currency=emitted.currency,
                            change="merged",
                        ),
                        shop_id=merge.shop_id,
                        contact_key=merge.to_key,
                        source=merge.source,
                        occurred_at=merge.occurred_at,
                        received_at=merge.received_at,
                        event_id=deterministic_id(
                            merge.shop_id, merge.message_id, "merge", emitted.cart_id
                        ),
                    )
                )
        return events


def _added(line: LineItem, merge: CartMerge) -> CartDelta:
    return CartDelta(
        event_id=uuid.UUID(int=0),
        shop_id=merge.shop_id,
        contact_key=merge.to_key,
        cart_id=None,
        change="product_added",
        items=(line,),
        replace=False,
        currency=None,
        occurred_at=merge.occurred_at,
        received_at=merge.received_at,
        source=merge.source,
    )


def segment_to_events(
    message: object,
    *,
    shop_id: str,
    received_at: datetime,
    index: int = 0,
    message_type: MessageType | None = None,
    carts: CartBook | None = None,
    max_age: timedelta | None = MAX_AGE,
    max_ahead: timedelta | None = MAX_AHEAD,
) -> list[Event[Any]]:
    """Map one message to its events, folding cart changes into `carts` (a fresh book if None).

    A simulation passes one `CartBook` for the whole run so carts accumulate.
    """
    produced = map_message(
        message,
        shop_id=shop_id,
        received_at=received_at,
        index=index,
        message_type=message_type,
        max_age=max_age,
        max_ahead=max_ahead,
    )
    book = carts if carts is not None else CartBook(shop_id)
    return book.resolve(produced)


def cart_needs(
    produced: Iterable[Produced | EncodedEvent],
) -> tuple[set[str], set[str], set[uuid.UUID]]:
    """What a cart store must load before `resolve`: contact keys, cart ids, delta ids."""
    contacts: set[str] = set()
    cart_ids: set[str] = set()
    delta_ids: set[uuid.UUID] = set()
    for item in produced:
        if isinstance(item, EncodedEvent):  # first: ingest's events are all of this kind
            if item.type == OrderCompleted.TYPE:
                contacts.add(item.contact_key)
                if item.cart_id is not None:
                    cart_ids.add(item.cart_id)
        elif isinstance(item, CartDelta):
            contacts.add(item.contact_key)
            delta_ids.add(item.event_id)
            if item.cart_id is not None:
                cart_ids.add(item.cart_id)
        elif isinstance(item, CartMerge):
            contacts.update(item.from_keys)
            contacts.add(item.to_key)
        elif isinstance(item.payload, OrderCompleted):
            contacts.add(item.contact_key)
            if item.payload.cart_id is not None:
                cart_ids.add(item.payload.cart_id)
    return contacts, cart_ids, delta_ids
