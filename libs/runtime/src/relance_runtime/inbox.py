"""The inbox: a consumer applies an event only if its id was not seen before.

`claim_new` runs inside the handler's transaction, so the record of having processed an
event commits atomically with the event's effect. A redelivered event (after a crash, a
rebalance, or a producer retry) is recognised and skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from relance_runtime.db import Connection


async def claim_new(
    conn: Connection, consumer: str, event_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Record `event_ids` as processed by `consumer`; return those not seen before."""
    if not event_ids:
        return set()
    rows = await conn.fetch(
        """INSERT INTO runtime_inbox (consumer, event_id)
           SELECT $1, id FROM unnest($2::uuid[]) AS id
           ON CONFLICT DO NOTHING
           RETURNING event_id""",
        consumer,
        list(event_ids),
    )
    return {row["event_id"] for row in rows}


async def prune(conn: Connection, older_than_days: int) -> int:
    """Forget ids older than the longest redelivery we can see (topic retention)."""
    result = await conn.execute(
        "DELETE FROM runtime_inbox WHERE processed_at < now() - make_interval(days => $1)",
        older_than_days,
    )
    return int(result.split()[-1])
