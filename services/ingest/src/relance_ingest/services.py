"""Use cases: accept Segment messages, record opens / clicks / unsubscribes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import Span, Tracer

from relance_events import EncodedEvent, Event, TraceContext, deterministic_id, new_event
from relance_events.payloads import ConsentChanged, EmailOpened, LinkClicked
from relance_events.segment_spec import (
    CartDelta,
    CartMerge,
    EncodedProduced,
    MessageType,
    Produced,
    cart_needs,
    map_messages_encoded,
)
from relance_ingest.ports import CartProbe, CartStore
from relance_runtime.bus.ports import Publisher
from relance_runtime.consumer import is_transient
from relance_runtime.errors import BusUnavailable, TransientError
from relance_runtime.telemetry import current_trace_context, tracer
from relance_runtime.tokens import InvalidToken, TokenSigner

log = logging.getLogger(__name__)

TRACKING_SOURCE = "tracking"


@dataclass(eq=False)
class _Request:
    """A request's events (it changes no cart), waiting to be committed with others."""

    shop_id: str
    events: list[EncodedEvent]
    probe: CartProbe | None
    trace: TraceContext | None
    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, outcome: int | BaseException) -> None:
        """Answer the waiting request (unless it went away, cancelling its future)."""
        if self.done.done():
            return
        if isinstance(outcome, BaseException):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)


def unavailable(exc: Exception) -> Exception:
    """The cart store's database being away is a 503 (retry), like the bus: nothing was
    published. Anything else is returned as it is."""
    if isinstance(exc, TransientError) or not is_transient(exc):
        return exc
    return TransientError(f"the database is unavailable: {exc!r}")


class IngestService:
    """Validate a request's messages, fold cart changes, publish, and only then return.

    Requests that change no cart are committed in groups: while a group is in flight
    (one read of open carts for its orders, then one acknowledged publish), new requests
    wait, and the next group takes them all. A group starts `group_interval_s` after the
    previous one at the earliest, unless `full_group_events` already wait: a publish and
    a cart read cost the broker, the database and us far more than an event does, so
    under load fuller groups leave more CPU for requests (a quiet service, whose groups
    are further apart, commits a request at once). Every request still returns only once
    all of its events were acknowledged, and a refused publish fails each request of its
    group, and only them.
    """

    def __init__(
        self,
        publisher: Publisher,
        carts: CartStore,
        *,
        max_age: timedelta = timedelta(days=30),
        max_ahead: timedelta = timedelta(minutes=5),
        spans: Tracer | None = None,
        max_group_events: int = 2_000,
        group_interval_s: float = 0.003,
        full_group_events: int = 16,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publisher = publisher
        self._carts = carts
        self._max_age = max_age
        self._max_ahead = max_ahead
        self._tracer = spans or tracer()
        self._max_group_events = max_group_events
        self._group_interval_s = group_interval_s
        self._full_group_events = full_group_events
        self._monotonic = monotonic
        self._waiting: deque[_Request] = deque()
        self._waiting_events = 0
        self._committing = False
        self._group_started = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    def map(
        self,
        shop_id: str,
        messages: Sequence[tuple[MessageType | None, object]],
        received_at: datetime,
        trace: TraceContext | None = None,
    ) -> list[EncodedProduced]:
        """Every message mapped, or `SegmentValidationError` naming every bad field of all.

        Events come in their wire form: ingest only publishes them (cart changes aside).
        """
        return map_messages_encoded(
            messages,
            shop_id=shop_id,
            received_at=received_at,
            max_age=self._max_age,
            max_ahead=self._max_ahead,
            trace=trace,
        )

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
        with self._tracer.start_as_current_span(
            "ingest.accept",
            attributes={"relance.shop_id": shop_id, "relance.messages": len(messages)},
        ) as span:
            return await self._accept(shop_id, messages, received_at, trace_of(span))

    async def _accept(
        self,
        shop_id: str,
        messages: Sequence[tuple[MessageType | None, object]],
        received_at: datetime,
        trace: TraceContext | None,
    ) -> int:
        produced = self.map(shop_id, messages, received_at, trace)
        contacts, cart_ids, delta_ids = cart_needs(produced)
        events = _events_only(produced)
        if events is None:
            return await self._with_carts(shop_id, produced, trace, contacts, cart_ids, delta_ids)
        # Orders only close an open cart; most contacts have none, and a lock-free read
        # spares them a transaction held open for the whole publish. A cart opened
        # concurrently is one the order did not know about, as if it came first.
        probe = CartProbe(shop_id, contacts, cart_ids) if contacts or cart_ids else None
        request = _Request(shop_id, events, probe, trace)
        self._waiting.append(request)
        self._waiting_events += len(events)
        if not self._committing:
            self._committing = True
            await self._commit_waiting()
        return await request.done

    async def _with_carts(
        self,
        shop_id: str,
        produced: Sequence[EncodedProduced],
        trace: TraceContext | None,
        contacts: set[str],
        cart_ids: set[str],
        delta_ids: set[uuid.UUID],
    ) -> int:
        """Cart changes are saved in the transaction that waits for the publish."""
        try:
            async with self._carts.session() as session:
                book = await session.load(
                    shop_id, contact_keys=contacts, cart_ids=cart_ids, delta_ids=delta_ids
                )
                events = traced(book.resolve(_models(produced)), trace)
                await session.save(book)
                await self._publisher.publish(events)
        except Exception as exc:
            raise unavailable(exc) from exc
        return len(events)

    async def _commit_waiting(self) -> None:
        """Commit the waiting requests as one group; a task takes over if more came."""
        if self._waiting_events < self._full_group_events:
            pause = self._group_started + self._group_interval_s - self._monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
        self._group_started = self._monotonic()
        group: list[_Request] = []
        size = 0
        while self._waiting and (not group or size < self._max_group_events):
            group.append(self._waiting.popleft())
            size += len(group[-1].events)
        self._waiting_events -= size
        try:
            await self._commit(group)
        except BaseException as exc:
            # Cancelled (shutdown) or a bug: nobody may wait forever, nor count as accepted.
            for request in group:
                request.settle(BusUnavailable(f"the group commit was interrupted: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            log.exception("group commit failed")
        finally:
            if self._waiting:
                self._spawn(self._commit_waiting())
            else:
                self._committing = False

    async def _commit(self, group: list[_Request]) -> None:
        probed = [r for r in group if r.probe is not None]
        try:
            opened = (
                await self._carts.open_carts([r.probe for r in probed if r.probe]) if probed else []
            )
        except Exception as exc:
            for request in group:
                request.settle(unavailable(exc))
            return
        with_open_cart = {id(r) for r, is_open in zip(probed, opened, strict=True) if is_open}
        plain: list[tuple[_Request, list[EncodedEvent]]] = []
        for request in group:
            if id(request) in with_open_cart:
                self._spawn(self._close_cart(request))
            else:
                # No cart to fold nor to close: the mapped events are final (and traced).
                plain.append((request, request.events))
        try:
            events = [e for _, request_events in plain for e in request_events]
            if events:
                await self._publisher.publish(events)
        except BusUnavailable as exc:
            for request, _ in plain:
                request.settle(BusUnavailable(str(exc), retry_after_s=exc.retry_after_s))
        except Exception as exc:
            for request, _ in plain:
                request.settle(exc)
        else:
            for request, request_events in plain:
                request.settle(len(request_events))

    async def _close_cart(self, request: _Request) -> None:
        """An order of a contact with an open cart: the transactional path, on its own."""
        contacts, cart_ids, delta_ids = cart_needs(request.events)
        try:
            count = await self._with_carts(
                request.shop_id, request.events, request.trace, contacts, cart_ids, delta_ids
            )
        except Exception as exc:
            request.settle(exc)
        except BaseException as exc:
            request.settle(BusUnavailable(f"interrupted: {exc!r}"))
            raise
        else:
            request.settle(count)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def traced(events: Sequence[Event[Any]], trace: TraceContext | None) -> list[Event[Any]]:
    """Stamp `trace` on events, so their handling joins this request's trace."""
    if trace is None:
        return list(events)
    return [e if e.trace is not None else e.model_copy(update={"trace": trace}) for e in events]


def trace_of(span: Span) -> TraceContext | None:
    """The W3C context of `span`, as `current_trace_context()` would give it inside it,
    without a trip through the global propagators (it costs on every request)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    state = context.trace_state.to_header() if context.trace_state else ""
    return TraceContext(
        traceparent=f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}",
        tracestate=state or None,
    )


def _events_only(produced: list[EncodedProduced]) -> list[EncodedEvent] | None:
    """`produced` when it holds only events, None when it changes carts."""
    if any(isinstance(item, CartDelta | CartMerge) for item in produced):
        return None
    return produced  # type: ignore[return-value]


def _models(produced: Sequence[EncodedProduced]) -> list[Produced]:
    """Cart folding works on models: the wire forms of a cart request become events."""
    return [item.event() if isinstance(item, EncodedEvent) else item for item in produced]


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
