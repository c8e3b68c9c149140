"""The platform's outbox and inbox behind the feedback ports.

The repository works on the `Connection` protocol; at runtime that connection is the
asyncpg one the `PoolTransactor` opened, which is what the runtime's helpers take.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from relance_events import Event
from relance_feedback.ports import Connection
from relance_runtime import inbox
from relance_runtime.db import Connection as DbConnection
from relance_runtime.outbox import Outbox


class RuntimeOutbox:
    """`EventOutbox` over `platform.outbox` (the log bus or `runtime_outbox` + relay)."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def add(self, conn: Connection, events: Sequence[Event[Any]]) -> None:
        await self._outbox.add(cast(DbConnection, conn), events)


class RuntimeInbox:
    """`Inbox` over `runtime_inbox`, under one consumer name."""

    def __init__(self, consumer: str) -> None:
        self._consumer = consumer

    async def claim_new(self, conn: Connection, event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        return await inbox.claim_new(cast(DbConnection, conn), self._consumer, event_ids)
