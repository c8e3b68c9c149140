"""Use cases: apply an event to a contact, fire due timers, read plan stats.

The consumer (`consumer.py`) and the timer loop call these inside their transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
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
from relance_orchestrator.domain.commands import Command, RequestMessage, Wakeup
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.state import ContactState
from relance_orchestrator.ports import (
    ContactStore,
    DueTimer,
    Journal,
    Outbox,
    ShopDirectory,
    StepCounts,
    TimerStore,
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
    ) -> tuple[Command, ...]:
        """Apply one event; `conn` must be inside the transaction that also records the inbox.

        Message status and engagement events are journalled by message id for stats; an
        alias merges the anonymous contact into the known one; an event for a contact that
        was merged goes to the contact it was merged into."""
        payload = event.payload
        if isinstance(payload, MessageSent):
            await self.journal.track(conn, event.shop_id, "sent", payload.message_id, now)
        elif isinstance(payload, EmailOpened | LinkClicked) and payload.message_id is not None:
            kinds: tuple[TrackedKind, ...] = (
                ("opened",) if isinstance(payload, EmailOpened) else ("opened", "clicked")
            )
            for kind in kinds:  # a click proves an open
                await self.journal.track(conn, event.shop_id, kind, payload.message_id, now)
        if isinstance(payload, ContactAliased):
            return await self._alias(conn, event, payload, now, trace)
        state = await self.contacts.lock(conn, event.shop_id, event.contact_key)
        if state.merged_into is not None:
            target = state.merged_into
            event = event.model_copy(update={"contact_key": target})
            state = await self.contacts.lock(conn, event.shop_id, target)
        if isinstance(payload, OrderCompleted) and payload.order_id not in state.facts.order_ids:
            await self.shops.order_seen(
                conn, event.shop_id, payload.order_id, payload.total, event.occurred_at
            )
        shop = await self.shops.shop_facts(conn, state.shop_id, now)
        new_state, commands = self.engine.decide(state, event, now, shop)
        await self._carry_out(conn, new_state, commands, trace)
        return commands

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
        this never waits on an event handler (and so can never deadlock with one). Each
        timer runs in a savepoint: one that raises is rolled back alone, counted, and
        retried later or parked, so it never blocks the rest of the batch."""
        async with conn.transaction():
            due = await self.timers.claim_due(conn, now, limit)
            if not due:
                return 0
            states = await self.contacts.try_lock_many(
                conn, sorted({(t.shop_id, t.contact_key) for t in due})
            )
            handled = 0
            for timer in due:
                contact = (timer.shop_id, timer.contact_key)
                state = states.get(contact)
                if state is None:
                    continue
                handled += 1
                if isinstance(state, UnreadableState):
                    await self._timer_failed(conn, timer, state.error, now)
                    continue
                try:
                    async with conn.transaction():
                        states[contact] = await self._fire(conn, state, timer, now)
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    await self._timer_failed(conn, timer, f"{type(exc).__name__}: {exc}", now)
            return handled

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

    async def _fire(
        self, conn: Connection, state: ContactState, timer: DueTimer, now: datetime
    ) -> ContactState:
        await self.timers.delete(conn, [timer])
        shop = await self.shops.shop_facts(conn, state.shop_id, now)
        new_state, commands = self.engine.decide(state, Wakeup(timer.key, timer.due_at), now, shop)
        await self._carry_out(conn, new_state, commands, None)
        return new_state

    async def _carry_out(
        self,
        conn: Connection,
        state: ContactState,
        commands: Sequence[Command],
        trace: TraceContext | None,
    ) -> None:
        await self.contacts.save(conn, state)
        await self.timers.apply(conn, state.shop_id, state.contact_key, commands)
        await self.journal.record(conn, state, commands)
        requests = [
            message_requested_event(c, trace) for c in commands if isinstance(c, RequestMessage)
        ]
        if requests:
            await self.outbox.add(conn, requests)

    async def stats(
        self, conn: Connection, shop_id: str, since: datetime | None = None
    ) -> tuple[list[StepCounts], dict[str, int]]:
        """Per plan step figures, and parked timers per plan."""
        return await self.journal.stats(conn, shop_id, since), await self.timers.parked(
            conn, shop_id
        )
