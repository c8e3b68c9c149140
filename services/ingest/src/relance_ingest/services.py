"""Use cases: accept Segment messages, record opens / clicks / unsubscribes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from relance_events import Event, deterministic_id, new_event
from relance_events.payloads import ConsentChanged, EmailOpened, LinkClicked
from relance_events.segment_spec import (
    CartBook,
    CartDelta,
    CartMerge,
    MessageType,
    Produced,
    SegmentValidationError,
    cart_needs,
    map_message,
)
from relance_ingest.ports import CartStore
from relance_runtime.bus.ports import Publisher
from relance_runtime.errors import BusUnavailable
from relance_runtime.telemetry import current_trace_context, tracer
from relance_runtime.tokens import InvalidToken, TokenSigner

log = logging.getLogger(__name__)

TRACKING_SOURCE = "tracking"


class IngestService:
    """Validate a request's messages, fold cart changes, publish, and only then return."""

    def __init__(
        self,
        publisher: Publisher,
        carts: CartStore,
        *,
        max_age: timedelta = timedelta(days=30),
        max_ahead: timedelta = timedelta(minutes=5),
    ) -> None:
        self._publisher = publisher
        self._carts = carts
        self._max_age = max_age
        self._max_ahead = max_ahead

    def map(
        self,
        shop_id: str,
        messages: Sequence[tuple[MessageType | None, object]],
        received_at: datetime,
    ) -> list[Produced]:
        """Every message mapped, or `SegmentValidationError` naming every bad field of all."""
        produced: list[Produced] = []
        errors: list[dict[str, Any]] = []
        for index, (kind, message) in enumerate(messages):
            try:
                produced.extend(
                    map_message(
                        message,
                        shop_id=shop_id,
                        received_at=received_at,
                        index=index,
                        message_type=kind,
                        max_age=self._max_age,
                        max_ahead=self._max_ahead,
                    )
                )
            except SegmentValidationError as exc:
                errors.extend(exc.errors)
        if errors:
            raise SegmentValidationError(errors)
        return produced

    async def accept(
        self,
        shop_id: str,
        messages: Sequence[tuple[MessageType | None, object]],
        received_at: datetime,
    ) -> int:
        """Publish every event of the messages; returns how many. Raises `BusUnavailable`.

        Cart changes are saved in the same transaction that waits for the publish, so a
        refused publish leaves the carts as they were.
        """
        with tracer().start_as_current_span(
            "ingest.accept",
            attributes={"relance.shop_id": shop_id, "relance.messages": len(messages)},
        ):
            return await self._accept(shop_id, messages, received_at)

    async def _accept(
        self,
        shop_id: str,
        messages: Sequence[tuple[MessageType | None, object]],
        received_at: datetime,
    ) -> int:
        produced = self.map(shop_id, messages, received_at)
        contacts, cart_ids, delta_ids = cart_needs(produced)
        # Orders only close an open cart; most contacts have none, and a lock-free read
        # spares them a transaction held open for the whole publish. A cart opened
        # concurrently is one the order did not know about, as if it came first.
        if (
            (contacts or cart_ids)
            and not _changes_carts(produced)
            and not await self._carts.has_open_cart(
                shop_id, contact_keys=contacts, cart_ids=cart_ids
            )
        ):
            contacts, cart_ids = set(), set()
        if not contacts and not cart_ids:
            events = traced(CartBook(shop_id).resolve(produced))
            if events:
                await self._publisher.publish(events)
            return len(events)
        async with self._carts.session() as session:
            book = await session.load(
                shop_id, contact_keys=contacts, cart_ids=cart_ids, delta_ids=delta_ids
            )
            events = traced(book.resolve(produced))
            await session.save(book)
            await self._publisher.publish(events)
        return len(events)


def traced(events: Sequence[Event[Any]]) -> list[Event[Any]]:
    """Stamp the current span's context on events, so their handling joins this trace."""
    trace = current_trace_context()
    if trace is None:
        return list(events)
    return [e if e.trace is not None else e.model_copy(update={"trace": trace}) for e in events]


def _changes_carts(produced: Sequence[Produced]) -> bool:
    return any(isinstance(item, CartDelta | CartMerge) for item in produced)


@dataclass(frozen=True, slots=True)
class Click:
    url: str
    published: bool


class TrackingService:
    """Opens, clicks and one-click unsubscribes from tokens minted by the sender."""

    def __init__(self, publisher: Publisher, signer: TokenSigner) -> None:
        self._publisher = publisher
        self._signer = signer

    def _claims(self, purpose: str, token: str) -> dict[str, Any] | None:
        try:
            claims = self._signer.verify(purpose, token)
        except InvalidToken:
            return None
        if not all(isinstance(claims.get(k), str) and claims[k] for k in ("s", "c", "m")):
            return None
        return claims

    def _event(
        self, claims: dict[str, Any], payload: Any, now: datetime, *id_parts: str
    ) -> Event[Any]:
        return new_event(
            payload,
            shop_id=claims["s"],
            contact_key=claims["c"],
            source=TRACKING_SOURCE,
            occurred_at=now,
            received_at=now,
            event_id=deterministic_id(claims["s"], claims["m"], *id_parts),
            trace=current_trace_context(),
        )

    @staticmethod
    def _opt(value: object) -> str | None:
        return value if isinstance(value, str) and value else None

    async def opened(self, token: str, now: datetime) -> bool:
        """Publish an open for a valid token (one per message); never raises for the pixel."""
        claims = self._claims("open", token)
        if claims is None:
            return False
        payload = EmailOpened(
            message_id=claims["m"],
            plan=self._opt(claims.get("pl")),
            step=self._opt(claims.get("st")),
        )
        try:
            await self._publisher.publish([self._event(claims, payload, now, "email.opened")])
        except BusUnavailable:
            log.warning("open not recorded: bus unavailable", extra={"message_id": claims["m"]})
            return False
        return True

    async def clicked(self, token: str, now: datetime) -> Click | None:
        """The target inside a valid token (None if invalid); the click is published if possible."""
        claims = self._claims("click", token)
        if claims is None:
            return None
        url = claims.get("u")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            return None
        payload = LinkClicked(
            message_id=claims["m"],
            plan=self._opt(claims.get("pl")),
            step=self._opt(claims.get("st")),
            url=url,
        )
        try:
            await self._publisher.publish(
                [self._event(claims, payload, now, "email.link_clicked", url)]
            )
        except BusUnavailable:
            # The person still gets where they were going; only the statistic is lost.
            log.warning("click not recorded: bus unavailable", extra={"message_id": claims["m"]})
            return Click(url, published=False)
        return Click(url, published=True)

    def unsubscribe_claims(self, token: str) -> dict[str, Any] | None:
        claims = self._claims("unsub", token)
        if claims is None or claims.get("ch") not in ("email", "sms"):
            return None
        if claims.get("pu", "marketing") not in ("marketing", "transactional"):
            return None
        return claims

    async def unsubscribe(self, token: str, now: datetime) -> bool:
        """Record the objection; False for a bad token. Raises `BusUnavailable`.

        The event id depends only on the token's message, channel and purpose, so repeats
        are the same event and downstream applies it once.
        """
        claims = self.unsubscribe_claims(token)
        if claims is None:
            return False
        channel = "sms" if claims["ch"] == "sms" else "email"
        purpose = "transactional" if claims.get("pu") == "transactional" else "marketing"
        payload = ConsentChanged(
            channel=channel,
            purpose=purpose,
            status="denied",
            origin="unsubscribe_link",
            message_id=claims["m"],
        )
        await self._publisher.publish(
            [self._event(claims, payload, now, "unsubscribe", channel, purpose)]
        )
        return True
