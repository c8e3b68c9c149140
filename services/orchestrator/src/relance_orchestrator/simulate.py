"""Backtest core: the real engine on a virtual clock with in-memory timers.

`Simulation` is what the service does (decide, then carry out the commands) minus
Kafka and PostgreSQL: timers live in a heap and fire in (due time, contact, key) order, so
the same input always gives the same sends. `simulate_segment_file` feeds it Segment-format
JSONL; the `relance simulate` command wraps that.

A `Survey Answered` track becomes the `survey.answered` event the feedback service
publishes in production. Only here: live ingest leaves it a custom event, since answers
reach production through the feedback service, which records them and alerts support.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, get_args

import orjson
from pydantic import ValidationError

from relance_events import Event, new_event
from relance_events.payloads import ContactAliased, CustomTracked, SurveyAnswer, SurveyAnswered
from relance_events.segment_spec import CartBook, SegmentValidationError, segment_to_events
from relance_orchestrator.domain.commands import (
    CancelWakeups,
    Command,
    DecisionRecorded,
    Finish,
    OrderAttributed,
    RequestMessage,
    ScheduleWakeup,
    Wakeup,
)
from relance_orchestrator.domain.engine import Engine, Input
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.state import ContactState


@dataclass
class Simulation:
    engine: Engine
    shop: ShopFacts
    states: dict[str, ContactState] = field(default_factory=dict)
    sends: list[RequestMessage] = field(default_factory=list)
    decisions: list[DecisionRecorded] = field(default_factory=list)
    attributions: list[OrderAttributed] = field(default_factory=list)
    finishes: list[Finish] = field(default_factory=list)
    now: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    _heap: list[tuple[datetime, str, str]] = field(default_factory=list)
    _timers: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def feed(self, event: Event[Any]) -> tuple[Command, ...]:
        """Fire every timer due up to the event, then apply it at its own time (unless no
        plan can act on it, as the service skips it)."""
        at = max(event.occurred_at, self.now)
        self.run_until(at)
        if not self.engine.interest.wants(event):
            return ()
        if isinstance(event.payload, ContactAliased):
            return self._alias(event.contact_key, event.payload, at)
        state = self.states.get(event.contact_key)
        if state is not None and state.merged_into is not None:
            event = event.model_copy(update={"contact_key": state.merged_into})
        return self._apply(event.contact_key, event, at)

    def _alias(self, known_key: str, alias: ContactAliased, now: datetime) -> tuple[Command, ...]:
        """As the service does: the anonymous contact's facts and plans follow the known one."""
        self.now = max(self.now, now)
        produced: list[Command] = []
        for key in sorted({f"anon:{alias.previous_id}", alias.previous_id} - {known_key}):
            anon = self.states.get(key)
            if anon is None and key.startswith("anon:"):
                anon = ContactState.new(self.shop.shop_id, key)
            if anon is None or anon.merged_into is not None:
                continue
            known = self.states.get(known_key) or ContactState.new(self.shop.shop_id, known_key)
            merged, known_commands, emptied, anon_commands = self.engine.merge(
                known, anon, now, self.shop
            )
            self.states[known_key] = merged
            self.states[key] = emptied
            self._carry_out(key, anon_commands)
            self._carry_out(known_key, known_commands)
            produced.extend(known_commands)
        return tuple(produced)

    def run_until(self, until: datetime) -> None:
        while self._heap and self._heap[0][0] <= until:
            at, contact, key = heapq.heappop(self._heap)
            if self._timers.get((contact, key)) != at:
                continue  # moved or cancelled since
            del self._timers[(contact, key)]
            self._apply(contact, Wakeup(key, at), at)
        self.now = max(self.now, until)

    def pending_timers(self) -> dict[tuple[str, str], datetime]:
        return dict(self._timers)

    def _apply(self, contact: str, item: Input, now: datetime) -> tuple[Command, ...]:
        self.now = max(self.now, now)
        state = self.states.get(contact) or ContactState.new(self.shop.shop_id, contact)
        new_state, commands = self.engine.decide(state, item, now, self.shop)
        self.states[contact] = new_state
        self._carry_out(contact, commands)
        return commands

    def _carry_out(self, contact: str, commands: tuple[Command, ...]) -> None:
        for command in commands:
            match command:
                case ScheduleWakeup(key=key, at=at):
                    self._timers[(contact, key)] = at
                    heapq.heappush(self._heap, (at, contact, key))
                case CancelWakeups(keys=keys):
                    for key in keys:
                        self._timers.pop((contact, key), None)
                case RequestMessage():
                    self.sends.append(command)
                case DecisionRecorded():
                    self.decisions.append(command)
                case OrderAttributed():
                    self.attributions.append(command)
                case Finish():
                    self.finishes.append(command)


def send_line(send: RequestMessage) -> bytes:
    return orjson.dumps(
        {
            "user_id": send.contact_key,
            "plan": send.plan,
            "step": send.step,
            "variant": send.variant,
            "channel": send.channel,
            "at": send.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "message_id": send.message_id,
            "plan_instance": send.plan_instance,
        },
        option=orjson.OPT_SORT_KEYS,
    )


@dataclass(frozen=True)
class PlanSummary:
    plan: str
    messages: int
    contacts: int
    attributed_orders: int
    revenue: Decimal


def summarize(sim: Simulation) -> list[PlanSummary]:
    messages: dict[str, int] = defaultdict(int)
    contacts: dict[str, set[str]] = defaultdict(set)
    orders: dict[str, int] = defaultdict(int)
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for send in sim.sends:
        messages[send.plan] += 1
        contacts[send.plan].add(send.contact_key)
    for attribution in sim.attributions:
        orders[attribution.plan] += 1
        revenue[attribution.plan] += attribution.revenue
    names = sorted(set(messages) | set(orders))
    return [PlanSummary(n, messages[n], len(contacts[n]), orders[n], revenue[n]) for n in names]


def read_segment_jsonl(lines: Iterable[bytes], *, shop_id: str) -> Iterator[Event[Any]]:
    """Relance events from Segment messages, in input order (invalid lines raise)."""
    carts = CartBook(shop_id)
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        message = orjson.loads(line)
        received = _received_at(message)
        for event in segment_to_events(
            message,
            shop_id=shop_id,
            received_at=received,
            index=index,
            carts=carts,
            max_age=None,
            max_ahead=None,
        ):
            payload = event.payload
            if isinstance(payload, CustomTracked) and payload.name == SURVEY_ANSWERED:
                yield _survey_answered(event, payload, index)
            else:
                yield event


SURVEY_ANSWERED = "Survey Answered"
_ANSWERS: tuple[str, ...] = get_args(SurveyAnswer)


def _survey_answered(
    event: Event[Any], tracked: CustomTracked, index: int
) -> Event[SurveyAnswered]:
    """The `survey.answered` event of a `Survey Answered` track (answer id: the event id)."""
    props = tracked.properties
    errors: list[dict[str, Any]] = []

    def bad(name: str, reason: str) -> None:
        errors.append({"index": index, "field": f"properties.{name}", "reason": reason})

    answer = props.get("answer")
    if answer is None:
        bad("answer", "required")
    elif answer not in _ANSWERS:
        bad("answer", f"must be one of {', '.join(_ANSWERS)}")
    order_id = props.get("order_id")
    if order_id is None:
        bad("order_id", "required")
    elif isinstance(order_id, bool) or not isinstance(order_id, str | int):
        bad("order_id", "must be a string or an integer")
    elif not str(order_id).strip():
        bad("order_id", "must not be empty")
    if errors:
        raise SegmentValidationError(errors)
    fields = {
        "answer_id": str(event.event_id),
        "order_id": str(order_id).strip(),
        "answer": answer,
        "origin": "api",
        **{k: props[k] for k in ("nps", "comment", "message_id") if props.get(k) is not None},
    }
    try:
        survey = SurveyAnswered.model_validate(fields)
    except ValidationError as exc:
        raise SegmentValidationError(
            [
                {"index": index, "field": f"properties.{e['loc'][0]}", "reason": e["msg"]}
                for e in exc.errors()
            ]
        ) from exc
    return new_event(
        survey,
        shop_id=event.shop_id,
        contact_key=event.contact_key,
        source=event.source,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        event_id=event.event_id,
        trace=event.trace,
    )


def _received_at(message: Any) -> datetime:
    raw = message.get("timestamp") if isinstance(message, dict) else None
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            pass
    return datetime(1970, 1, 1, tzinfo=UTC)


def simulate_segment_file(
    events_path: Path,
    until: datetime,
    out: IO[bytes],
    *,
    engine: Engine,
    shop: ShopFacts,
    progress: Callable[[int, int], None] | None = None,
) -> Simulation:
    """Run the plans over a Segment JSONL file and write one JSON line per send.

    Events are applied in timestamp order (ties keep file order), so output is byte-stable.
    """
    raw = events_path.read_bytes().splitlines()
    events = sorted(
        enumerate(read_segment_jsonl(raw, shop_id=shop.shop_id)),
        key=lambda pair: (pair[1].occurred_at, pair[0]),
    )
    sim = Simulation(engine=engine, shop=shop)
    total = len(events)
    for done, (_, event) in enumerate(events, start=1):
        if event.occurred_at > until:
            break
        sim.feed(event)
        if progress is not None and (done % 1000 == 0 or done == total):
            progress(done, total)
    sim.run_until(until)
    for send in sim.sends:
        out.write(send_line(send) + b"\n")
    return sim


__all__ = [
    "PlanSummary",
    "SegmentValidationError",
    "Simulation",
    "read_segment_jsonl",
    "send_line",
    "simulate_segment_file",
    "summarize",
]
