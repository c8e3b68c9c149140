"""Contact rows on real PostgreSQL: states stored packed, inline, and rows an earlier
version wrote as jsonb still read and fire, then are rewritten packed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from relance_orchestrator.adapters.postgres_timers import PostgresContactStore
from relance_orchestrator.adapters.state_codec import pack_state, unpack_state
from relance_orchestrator.domain.state import ContactState
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.outbox import TableOutbox

from .conftest import OrchestratorOn

LEGACY = Path(__file__).parents[2] / "unit" / "orchestrator" / "data" / "legacy_state.json"
PLACEHOLDER = "zz-contact-placeholder-zz"


def _legacy_json(contact_key: str) -> str:
    return LEGACY.read_text().replace(PLACEHOLDER, contact_key)


async def _insert_legacy(conn: asyncpg.Connection, contact_key: str) -> ContactState:
    """A row as migration 0002 left it: the state as jsonb, nothing packed."""
    text = _legacy_json(contact_key)
    await conn.execute(
        "INSERT INTO orchestrator_contacts (shop_id, contact_key, state) VALUES ($1, $2, $3)",
        "shop",
        contact_key,
        text,
    )
    state = unpack_state(None, text)
    for key, at in state.wakeups().items():
        await conn.execute(
            """INSERT INTO orchestrator_timers (shop_id, contact_key, timer_key, due_at)
               VALUES ('shop', $1, $2, $3)""",
            contact_key,
            key,
            at,
        )
    return state


async def test_a_legacy_row_reads_and_is_rewritten_packed(db: str) -> None:
    store = PostgresContactStore()
    conn = await asyncpg.connect(db)
    try:
        legacy = await _insert_legacy(conn, "old1")
        async with conn.transaction():
            assert await store.lock(conn, "shop", "old1") == legacy
            assert await store.lock_many(conn, [("shop", "old1")]) == {("shop", "old1"): legacy}
            assert await store.try_lock_many(conn, [("shop", "old1")]) == {("shop", "old1"): legacy}
            changed = legacy.evolve({"facts": legacy.facts.evolve({"first_name": "Bea"})})
            await store.save_many(conn, [changed])
        row = await conn.fetchrow(
            "SELECT packed, state FROM orchestrator_contacts WHERE contact_key = 'old1'"
        )
        assert row["state"] is None and unpack_state(row["packed"]) == changed
    finally:
        await conn.close()


async def test_a_legacy_rows_timers_fire_through_the_engine(
    db: str, orchestrator_on: OrchestratorOn
) -> None:
    conn = await asyncpg.connect(db)
    try:
        legacy = await _insert_legacy(conn, "old2")
        survey_due = legacy.wakeups()["satisfaction_survey/order:o9"]
        names = TopicNames("rows-")
        orch = orchestrator_on(TableOutbox(lambda event: to_message(event, names)))
        fired = 0
        while handled := await orch.fire_due(conn, survey_due + timedelta(minutes=1)):
            fired += handled
        assert fired >= 2  # the welcome pack's second step, then the survey
        packed, state = await conn.fetchrow(
            "SELECT packed, state FROM orchestrator_contacts WHERE contact_key = 'old2'"
        )
        after = unpack_state(packed)
        assert state is None
        new_sends = [(s.plan, s.step) for s in after.facts.sends[len(legacy.facts.sends) :]]
        assert ("satisfaction_survey", "survey") in new_sends
        assert await conn.fetchval("SELECT count(*) FROM runtime_outbox") == len(new_sends)
    finally:
        await conn.close()


async def test_a_typical_state_stays_inline_and_a_row_needs_a_state(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        state = unpack_state(None, _legacy_json("big"))
        packed = pack_state(state)
        assert 1000 < len(packed) < 4000  # larger than PostgreSQL's 2 KB TOAST threshold
        await conn.execute(
            "INSERT INTO orchestrator_contacts (shop_id, contact_key, packed) VALUES ($1, $2, $3)",
            "shop",
            "big",
            packed,
        )
        toast = await conn.fetchval(
            """SELECT pg_relation_size(reltoastrelid) FROM pg_class
               WHERE relname = 'orchestrator_contacts'"""
        )
        assert toast == 0  # stored in the row itself, uncompressed
        stored = await conn.fetchval(
            "SELECT pg_column_size(packed) FROM orchestrator_contacts WHERE contact_key = 'big'"
        )
        assert stored >= len(packed)  # not compressed
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO orchestrator_contacts (shop_id, contact_key) VALUES ('shop', 'none')"
            )
    finally:
        await conn.close()
