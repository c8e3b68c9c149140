"""Use cases: apply an event to a contact, fire due timers, read plan stats.

The consumer (`consumer.py`) and the timer loop call these inside their transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from relance_events import Event, TraceContext, deterministic_id, new_event
from relance_events.payloads import (
    ContactAliased,
    EmailOpened,
    LinkClicked,
    MessageRequested,
    MessageSent,
    OrderCompleted,
)
from relance_orchestrator.domain.commands import (
    CancelWakeups,
    Command,
    RequestMessage,
    ScheduleWakeup,
    Wakeup,
)
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.facts import ContactFacts, engaged_send
from relance_orchestrator.domain.state import ContactState
from relance_orchestrator.ports import (
    ContactStore,
    DueTimer,
    Journal,
    Outbox,
    SeenOrder,
    ShopDirectory,
    StepCounts,
    TimerStore,
    TimerWrite,
    Tracked,
    TrackedKind,
    UnreadableState,
)
from relance_runtime.consumer import is_transient
from relance_runtime.db import Connection

SOURCE = "orchestrator"
log = logging.getLogger(__name__)


def message_requested_event(
    command: RequestMessage, trace: TraceContext | None = None
) -> Event[MessageRequested]:
    """The event for the sender; its id is derived from the message id, so a refired timer
    or a replayed event stages the very same event (and consumers' inboxes drop it)."""
    payload = MessageRequested(
        message_id=command.message_id,
        plan=command.plan,
        step=command.step,
        plan_instance=command.plan_instance,
        variant=command.variant,
        channel=command.channel,
        purpose=command.purpose,
        locale=command.locale,
        context=command.context,
        not_after=command.not_after,
    )
    return new_event(
        payload,
        shop_id=command.shop_id,
        contact_key=command.contact_key,
        source=SOURCE,
        occurred_at=command.at,
        event_id=deterministic_id("message.requested", command.message_id),
        trace=trace,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One contact's decisions in a batch (of events, or of due timers): its final state,
    what it decided, and the timers that fired (none for events)."""

    state: ContactState
    commands: tuple[Command, ...]
    fired: tuple[DueTimer, ...]


def timer_writes(
    state: ContactState, commands: Sequence[Command], fired: Sequence[str]
) -> list[TimerWrite]:
    """The net timer changes of one contact: a fired timer is gone unless the final state
    still wants a wake-up under its key; then schedules and cancels, in decision order."""
    net: dict[str, datetime | None] = {key: state.wakeup_at(key) for key in fired}
    for command in commands:
        if isinstance(command, ScheduleWakeup):
            net[command.key] = command.at
        elif isinstance(command, CancelWakeups):
            for key in command.keys:
                net[key] = None
    return [TimerWrite(state.shop_id, state.contact_key, k, at) for k, at in net.items()]


Traced = Callable[[Event[Any]], AbstractContextManager[TraceContext | None]]


@contextmanager
def _trace_of(trace: TraceContext | None) -> Iterator[TraceContext | None]:
    yield trace


def _fixed_trace(trace: TraceContext | None) -> Traced:
    return lambda _event: _trace_of(trace)


def _requests(
    commands: Sequence[Command], trace: TraceContext | None
) -> list[Event[MessageRequested]]:
    return [message_requested_event(c, trace) for c in commands if isinstance(c, RequestMessage)]


def _outcome_requests(firings: Sequence[Outcome]) -> list[Event[MessageRequested]]:
    return [r for f in firings for r in _requests(f.commands, None)]


def _tracked(event: Event[Any], facts: ContactFacts) -> list[Tracked]:
    """What a status or engagement event adds to the journal, at the time it happened. An
    open or click naming a plan and step instead of a message id counts for the message the
    engine marks (the latest of that step sent by then)."""
    payload = event.payload
    at = event.occurred_at
    if isinstance(payload, MessageSent):
        return [Tracked(event.shop_id, "sent", payload.message_id, at)]
    if not isinstance(payload, EmailOpened | LinkClicked):
        return []
    message_id = payload.message_id
    if message_id is None:
        found = engaged_send(facts, at, None, payload.plan, payload.step)
        if found is None:
            return []
        message_id = facts.sends[found].message_id
    kinds: tuple[TrackedKind, ...] = (  # a click proves an open
        ("opened",) if isinstance(payload, EmailOpened) else ("opened", "clicked")
    )
    return [Tracked(event.shop_id, kind, message_id, at) for kind in kinds]


def _contacts_of(events: Sequence[Event[Any]]) -> list[tuple[str, str]]:
    """The contacts a batch locks up front (an alias locks its own, in its own order)."""
    return sorted(
        {(e.shop_id, e.contact_key) for e in events if not isinstance(e.payload, ContactAliased)}
    )


def _new_orders(
    events: Sequence[Event[Any]], states: Mapping[tuple[str, str], ContactState]
) -> list[SeenOrder]:
    """The batch's orders, but those their contact's state already knows (replays)."""
    seen: list[SeenOrder] = []
    for event in events:
        payload = event.payload
        if isinstance(payload, OrderCompleted):
            state = states.get((event.shop_id, event.contact_key))
            if state is None or payload.order_id not in state.facts.order_ids:
                seen.append(
                    SeenOrder(event.shop_id, payload.order_id, payload.total, event.occurred_at)
                )
    return seen


@dataclass
class _Batch:
    """A batch of events in progress: locked states, and what is decided (or tracked: sent,
    opened, clicked) but not written.

    `stored` is each state as the database holds it: a contact whose state the batch left
    equal (a redelivered identify, a message status) and that got no command is not written again;
    rewriting 3-6 KB of JSON per event was most of a quiet event's cost."""

    states: dict[tuple[str, str], ContactState]
    commands: dict[tuple[str, str], list[Command]] = field(default_factory=dict)
    requests: list[Event[MessageRequested]] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    stored: dict[tuple[str, str], ContactState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stored = dict(self.states)

    async def state(
        self, conn: Connection, contacts: ContactStore, shop_id: str, contact_key: str
    ) -> ContactState:
        key = (shop_id, contact_key)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = await contacts.lock(conn, shop_id, contact_key)
            self.stored[key] = state
        return state

    def forget(self) -> None:
        """Drop the locked states (they are read again when next needed)."""
        self.states.clear()
        self.stored.clear()

    def decided(
        self, state: ContactState, commands: Sequence[Command], trace: TraceContext | None
    ) -> None:
        key = (state.shop_id, state.contact_key)
        self.states[key] = state
        self.commands.setdefault(key, []).extend(commands)
        self.requests.extend(_requests(commands, trace))

    def outcomes(self) -> list[Outcome]:
        return [
            Outcome(self.states[k], tuple(c), ())
            for k, c in self.commands.items()
            if c or self.states[k] != self.stored.get(k)
        ]

    def written(self) -> None:
        for key in self.commands:
            self.stored[key] = self.states[key]
        self.commands.clear()
        self.requests.clear()
        self.tracked.clear()


@dataclass(frozen=True)
class TimerRetry:
    """Poison timers: a firing that raises is retried after `backoff * 2**attempt`, and
    parked (recorded in the journal, counted in stats) once it failed `max_attempts` times."""

    max_attempts: int = 5
    backoff: timedelta = timedelta(seconds=5)

    def retry_at(self, now: datetime, attempts: int) -> datetime:
        delay: timedelta = self.backoff * (2 ** min(attempts, 16))
        return now + delay


@dataclass(frozen=True)
class Orchestrator:
    engine: Engine
    contacts: ContactStore
    timers: TimerStore
    journal: Journal
    outbox: Outbox
    shops: ShopDirectory
    retry: TimerRetry = TimerRetry()

    async def handle_event(
        self,
        conn: Connection,
        event: Event[Any],
        now: datetime,
        trace: TraceContext | None = None,
    ) -> None:
        """Apply one event (see `handle_events`)."""
        await self.handle_events(conn, [event], now, traced=_fixed_trace(trace))

    async def handle_events(
        self,
        conn: Connection,
        events: Sequence[Event[Any]],
        now: datetime,
        *,
        traced: Traced | None = None,
    ) -> None:
        """Apply a batch of events in order; `conn` must be inside the transaction that also
        records the inbox.

        The batch's contacts are locked once, in key order; each contact's decisions chain
        in memory and are written once at the end (one statement per table). Message status
        and engagement events are journalled by message id for stats; an alias (rare)
        writes what came before it, then merges the anonymous contact into the known one;
        an event for a contact that was merged goes to the contact it was merged into.
        `traced(event)` wraps each event's handling (a span) and gives the trace the
        requested messages carry."""
        traced = traced or _fixed_trace(None)
        batch = _Batch(await self.contacts.lock_many(conn, _contacts_of(events)))
        # Before any decision, as one statement: a decision may read the average basket.
        await self.shops.orders_seen(conn, _new_orders(events, batch.states))
        for event in events:
            with traced(event) as trace:
                await self._apply(conn, batch, event, now, trace)
        await self._write(conn, batch)

    async def _apply(
        self,
        conn: Connection,
        batch: _Batch,
        event: Event[Any],
        now: datetime,
        trace: TraceContext | None,
    ) -> None:
        payload = event.payload
        if isinstance(payload, ContactAliased):
            await self._write(conn, batch)
            batch.forget()  # the merge re-reads (and may change) what it touches
            await self._alias(conn, event, payload, now, trace)
            return
        state = await batch.state(conn, self.contacts, event.shop_id, event.contact_key)
        if state.merged_into is not None:
            event = event.model_copy(update={"contact_key": state.merged_into})
            state = await batch.state(conn, self.contacts, event.shop_id, state.merged_into)
        batch.tracked.extend(_tracked(event, state.facts))
        shop = await self.shops.shop_facts(conn, state.shop_id, now)
        new_state, commands = self.engine.decide(state, event, now, shop)
        batch.decided(new_state, commands, trace)

    async def _write(self, conn: Connection, batch: _Batch) -> None:
        await self._carry_out_many(conn, batch.outcomes(), batch.requests)
        # after the requests: a message requested earlier in this batch is tracked too
        await self.journal.track(conn, batch.tracked)
        batch.written()

    async def _alias(
        self,
        conn: Connection,
        event: Event[Any],
        payload: ContactAliased,
        now: datetime,
        trace: TraceContext | None,
    ) -> tuple[Command, ...]:
        # Locks in key order, so two merges touching the same pair cannot deadlock; a
        # deadlock with another writer is retried by the consumer loop (transient).
        known_key = event.contact_key
        candidates = sorted({f"anon:{payload.previous_id}", payload.previous_id} - {known_key})
        if not candidates:
            return ()
        keys = sorted({known_key, *candidates})
        locked: dict[str, ContactState | None] = {}
        for key in keys:
            if key == known_key:
                locked[key] = await self.contacts.lock(conn, event.shop_id, key)
            elif key.startswith("anon:"):
                # always leave a forwarding state, so later anonymous events follow
                locked[key] = await self.contacts.lock(conn, event.shop_id, key)
            else:
                locked[key] = await self.contacts.lock_existing(conn, event.shop_id, key)
        known = locked[known_key]
        assert known is not None
        shop = await self.shops.shop_facts(conn, event.shop_id, now)
        produced: list[Command] = []
        for key in candidates:
            anon = locked[key]
            if anon is None or anon.merged_into is not None:
                continue
            known, known_commands, emptied, anon_commands = self.engine.merge(
                known, anon, now, shop
            )
            await self._carry_out(conn, emptied, anon_commands, trace)
            produced.extend(known_commands)
        await self._carry_out(conn, known, produced, trace)
        return tuple(produced)

    async def fire_due(self, conn: Connection, now: datetime, *, limit: int = 500) -> int:
        """Fire up to `limit` due timers in one transaction; returns how many were handled
        (fired, or failed and rescheduled/parked).

        Timers whose contact is locked by another writer are left for the next round, so
        this never waits on an event handler (and so can never deadlock with one). All
        decisions are taken first, then written with one statement per table. A timer whose
        decision raises is retried later or parked without holding back the rest; if the
        batch's writes fail for a reason other than the database being unavailable (a state
        PostgreSQL refuses), they are redone contact by contact so only that one fails."""
        async with conn.transaction():
            due = await self.timers.claim_due(conn, now, limit)
            if not due:
                return 0
            by_contact: dict[tuple[str, str], list[DueTimer]] = {}
            for timer in due:  # claimed in due order, which each contact's list keeps
                by_contact.setdefault((timer.shop_id, timer.contact_key), []).append(timer)
            states = await self.contacts.try_lock_many(conn, sorted(by_contact))
            firings: list[Outcome] = []
            failures: list[tuple[DueTimer, str]] = []
            for contact, timers in by_contact.items():
                state = states.get(contact)
                if state is None:
                    continue
                if isinstance(state, UnreadableState):
                    failures.extend((timer, state.error) for timer in timers)
                    continue
                firing = await self._decide_wakeups(conn, state, timers, now, failures)
                if firing is not None:
                    firings.append(firing)
            written = await self._carry_out_firings(conn, firings, failures)
            for timer, reason in failures:
                await self._timer_failed(conn, timer, reason, now)
            return sum(len(f.fired) for f in written) + len(failures)

    async def _decide_wakeups(
        self,
        conn: Connection,
        state: ContactState,
        timers: Sequence[DueTimer],
        now: datetime,
        failures: list[tuple[DueTimer, str]],
    ) -> Outcome | None:
        shop = await self.shops.shop_facts(conn, state.shop_id, now)
        fired: list[DueTimer] = []
        commands: list[Command] = []
        for timer in timers:
            try:
                state, produced = self.engine.decide(
                    state, Wakeup(timer.key, timer.due_at), now, shop
                )
            except Exception as exc:  # the engine is pure: this timer's input is poison
                failures.append((timer, f"{type(exc).__name__}: {exc}"))
                continue
            fired.append(timer)
            commands.extend(produced)
        return Outcome(state, tuple(commands), tuple(fired)) if fired else None

    async def _carry_out_firings(
        self, conn: Connection, firings: list[Outcome], failures: list[tuple[DueTimer, str]]
    ) -> list[Outcome]:
        """Write the batch; returns the firings that were written."""
        try:
            async with conn.transaction():
                await self._carry_out_many(conn, firings, _outcome_requests(firings))
            return firings
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("timer batch write failed; writing contact by contact", exc_info=exc)
        written: list[Outcome] = []
        for firing in firings:
            try:
                async with conn.transaction():
                    await self._carry_out_many(conn, [firing], _outcome_requests([firing]))
                written.append(firing)
            except Exception as exc:
                if is_transient(exc):
                    raise
                failures.extend((t, f"{type(exc).__name__}: {exc}") for t in firing.fired)
        return written

    async def _timer_failed(
        self, conn: Connection, timer: DueTimer, reason: str, now: datetime
    ) -> None:
        attempts = timer.attempts + 1
        park = attempts >= self.retry.max_attempts
        log.warning(
            "timer failed",
            extra={
                "shop_id": timer.shop_id,
                "contact_key": timer.contact_key,
                "timer": timer.key,
                "attempts": attempts,
                "parked": park,
                "error": reason,
            },
        )
        await self.timers.failed(
            conn, timer, reason, retry_at=self.retry.retry_at(now, timer.attempts), park=park
        )
        if park:
            await self.journal.timer_parked(conn, timer, reason, now)

    async def _carry_out(
        self,
        conn: Connection,
        state: ContactState,
        commands: Sequence[Command],
        trace: TraceContext | None,
    ) -> None:
        await self._carry_out_many(
            conn, [Outcome(state, tuple(commands), ())], _requests(commands, trace)
        )

    async def _carry_out_many(
        self,
        conn: Connection,
        outcomes: Sequence[Outcome],
        requests: Sequence[Event[MessageRequested]],
    ) -> None:
        """Write states, timers, journal and requested messages: one statement each."""
        if not outcomes:
            return
        await self.contacts.save_many(conn, [o.state for o in outcomes])
        await self.timers.write(
            conn,
            [
                w
                for o in outcomes
                for w in timer_writes(o.state, o.commands, [t.key for t in o.fired])
            ],
        )
        await self.journal.record(conn, [(o.state, o.commands) for o in outcomes])
        if requests:
            await self.outbox.add(conn, requests)

    async def stats(
        self, conn: Connection, shop_id: str, since: datetime | None = None
    ) -> tuple[list[StepCounts], dict[str, int]]:
        """Per plan step figures, and parked timers per plan."""
        return await self.journal.stats(conn, shop_id, since), await self.timers.parked(
            conn, shop_id
        )
