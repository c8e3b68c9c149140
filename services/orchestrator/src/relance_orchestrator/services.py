"""Use cases: apply an event to a contact, fire due timers. The lead's consumer loop and
timer loop call these inside their transactions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from relance_events import Event, deterministic_id, new_event
from relance_events.payloads import MessageRequested
from relance_orchestrator.domain.commands import Command, RequestMessage, Wakeup
from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.state import ContactState
from relance_orchestrator.ports import (
    ContactStore,
    DueTimer,
    Journal,
    Outbox,
    ShopDirectory,
    TimerStore,
)

SOURCE = "orchestrator"


def message_requested_event(command: RequestMessage) -> Event[MessageRequested]:
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
    )


@dataclass(frozen=True)
class Orchestrator:
    engine: Engine
    contacts: ContactStore
    timers: TimerStore
    journal: Journal
    outbox: Outbox
    shops: ShopDirectory

    async def handle_event(
        self, conn: asyncpg.Connection, event: Event[Any], now: datetime
    ) -> tuple[Command, ...]:
        """Apply one event; `conn` must be inside the transaction that also records the inbox."""
        state = await self.contacts.lock(conn, event.shop_id, event.contact_key)
        return await self._decide(conn, state, event, now)

    async def fire_due(self, conn: asyncpg.Connection, now: datetime, *, limit: int = 500) -> int:
        """Fire up to `limit` due timers in one transaction; returns how many fired.

        Timers whose contact is locked by another writer are left for the next round, so
        this never waits on an event handler (and so can never deadlock with one)."""
        async with conn.transaction():
            due = await self.timers.claim_due(conn, now, limit)
            if not due:
                return 0
            states = await self.contacts.try_lock_many(
                conn, sorted({(t.shop_id, t.contact_key) for t in due})
            )
            fired = [t for t in due if (t.shop_id, t.contact_key) in states]
            await self.timers.delete(conn, fired)
            for timer in fired:
                contact = (timer.shop_id, timer.contact_key)
                states[contact] = await self._fire(conn, states[contact], timer, now)
            return len(fired)

    async def _fire(
        self, conn: asyncpg.Connection, state: ContactState, timer: DueTimer, now: datetime
    ) -> ContactState:
        shop = self.shops.shop_facts(state.shop_id)
        new_state, commands = self.engine.decide(state, Wakeup(timer.key, timer.due_at), now, shop)
        await self._carry_out(conn, new_state, commands)
        return new_state

    async def _decide(
        self, conn: asyncpg.Connection, state: ContactState, event: Event[Any], now: datetime
    ) -> tuple[Command, ...]:
        shop = self.shops.shop_facts(state.shop_id)
        new_state, commands = self.engine.decide(state, event, now, shop)
        await self._carry_out(conn, new_state, commands)
        return commands

    async def _carry_out(
        self, conn: asyncpg.Connection, state: ContactState, commands: Sequence[Command]
    ) -> None:
        await self.contacts.save(conn, state)
        await self.timers.apply(conn, state.shop_id, state.contact_key, commands)
        await self.journal.record(conn, state, commands)
        requests = [message_requested_event(c) for c in commands if isinstance(c, RequestMessage)]
        if requests:
            await self.outbox.add(conn, requests)
