"""The connection pool on real PostgreSQL: releasing a connection costs no round trip, and
still leaves nothing of one user's session to the next."""

from __future__ import annotations

import asyncpg

from relance_runtime.db import create_pool


async def test_a_release_sends_no_reset_query(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        sent: list[str] = []
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
            async with conn.transaction():
                await conn.execute("SELECT 1")
        async with pool.acquire() as conn:
            conn.remove_query_logger(sent.append)
    finally:
        await pool.close()
    assert not any("RESET" in q or "UNLISTEN" in q for q in sent), sent


async def test_what_a_user_left_open_is_undone_before_the_next(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")  # not managed: left open by a bug
            await conn.execute("CREATE TEMP TABLE leftover (n int)")
            pid = conn.get_server_pid()
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid  # the same session, reused
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.leftover')") is None
    finally:
        await pool.close()


async def test_a_plain_connection_is_unchanged(database_url: str) -> None:
    """Only pooled releases skip the reset: a direct connection's `reset()` still runs it."""
    conn = await asyncpg.connect(database_url)
    try:
        assert "RESET ALL" in conn.get_reset_query()
    finally:
        await conn.close()
