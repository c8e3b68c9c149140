"""Leave-reason links (`/r/`) and their stats, through a real ASGI app on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request

from relance_events.payloads import LEAVE_REASONS
from relance_feedback.adapters.postgres import PostgresFeedbackRepository
from relance_feedback.domain.leave_reasons import ReasonSubmission, record_reason
from relance_feedback.http import ApiKeyKind, FeedbackDeps, build_router
from relance_runtime.auth import StaticKeyStore, authenticate, install_auth_handler
from relance_runtime.clock import SystemClock
from relance_runtime.tokens import TokenSigner
from relance_sender.domain.request import SendRequest
from relance_sender.email_message import TrackingLinks

SIGNER = TokenSigner({"k2": b"fedcba9876543210fedc", "k1": b"0123456789abcdef0123"}, "k2")
RETIRED = TokenSigner({"k0": b"an-old-key-nobody-has-now"}, "k0")
KEYS = StaticKeyStore.from_settings("shop-1:wk", "shop-1:ak")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def shop_of(request: Request, kind: ApiKeyKind) -> str:
    return await authenticate(KEYS, kind, request.headers.get("authorization"))


def claims(reason: str = "too_expensive", message: str = "m-1", step: str = "reminder_1"):
    return {"s": "shop-1", "c": "u-1", "m": message, "pl": "anti_churn", "st": step, "r": reason}


def reason_link(signer: TokenSigner = SIGNER, **overrides: str) -> str:
    return f"/r/{signer.mint('reason', claims(**overrides))}"


@pytest.fixture
async def client(pool: asyncpg.Pool, fb: Any) -> AsyncIterator[httpx.AsyncClient]:
    service, _ = fb.build(pool, None, ())
    api = FastAPI()
    install_auth_handler(api)
    api.include_router(build_router(FeedbackDeps(service, SIGNER, shop_of, SystemClock())))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://t"
    ) as http:
        yield http


async def rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    found = await pool.fetch(
        "SELECT shop_id, message_id, contact_key, plan, step, reason, comment, revision"
        " FROM feedback_leave_reasons ORDER BY message_id"
    )
    return [dict(r) for r in found]


async def test_a_prefetch_get_shows_the_reason_and_registers_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    response = await client.get(reason_link(reason="found_elsewhere"))
    assert response.status_code == 200
    assert "I found what I need elsewhere" in response.text
    assert '<form method="post">' in response.text
    assert response.headers["cache-control"] == "no-store"
    assert await rows(pool) == []


async def test_a_link_the_sender_minted_is_recorded_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    request = SendRequest.from_json(
        {
            "message_id": "m-7", "shop_id": "shop-1", "contact_key": "u-7",
            "plan": "anti_churn", "step": "reminder_2", "channel": "email",
            "purpose": "marketing", "context": {},
        }
    )  # fmt: skip
    url = TrackingLinks(SIGNER, "https://relance.example", request).reason("too_many_emails")
    path = url.removeprefix("https://relance.example")
    for _ in range(2):
        response = await client.post(path, data={"comment": "one a week <b>max</b>"})
        assert response.status_code == 200 and "recorded" in response.text
    assert await rows(pool) == [
        {
            "shop_id": "shop-1", "message_id": "m-7", "contact_key": "u-7",
            "plan": "anti_churn", "step": "reminder_2", "reason": "too_many_emails",
            "comment": "one a week <b>max</b>", "revision": 1,
        }
    ]  # fmt: skip
    # Only recorded: no consent change, no suppression, no event of any kind.
    assert await pool.fetchval("SELECT count(*) FROM runtime_outbox") == 0
    assert await pool.fetchval("SELECT count(*) FROM sender_suppressions") == 0


async def test_another_reason_from_the_same_email_replaces_the_first(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await client.post(reason_link(), data={"comment": "cheaper at X"})
    await client.post(reason_link(reason="found_elsewhere"), data={})
    await client.post(reason_link(message="m-2", reason="other"), data={})
    (first, second) = await rows(pool)
    assert (first["reason"], first["comment"], first["revision"]) == (
        "found_elsewhere",
        "cheaper at X",
        2,
    )
    assert (second["message_id"], second["reason"]) == ("m-2", "other")


async def test_bad_links_get_a_400_page_and_record_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    good = SIGNER.mint("reason", claims())
    kid, body, signature = good.split(".")
    tampered = f"{kid}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{signature}"
    survey_claims = {"s": "shop-1", "c": "u-1", "m": "m", "o": "o", "a": "satisfied"}
    survey = SIGNER.mint("survey", survey_claims)
    missing_step = {k: v for k, v in claims().items() if k != "st"}
    paths = [
        "/r/garbage",
        f"/r/{tampered}",
        f"/r/{survey}",  # a survey token is not a reason token
        reason_link(RETIRED),  # signed by a key no longer configured: lapsed
        reason_link(reason="bored"),  # signed, but not one of LEAVE_REASONS
        f"/r/{SIGNER.mint('reason', missing_step)}",
    ]
    for path in paths:
        for response in (await client.get(path), await client.post(path, data={})):
            assert response.status_code == 400, path
            assert "not valid" in response.text
    assert await rows(pool) == []


async def test_a_link_signed_by_an_older_configured_key_still_works(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    older = TokenSigner({"k1": b"0123456789abcdef0123"}, "k1")
    assert (await client.post(reason_link(older), data={})).status_code == 200
    assert len(await rows(pool)) == 1


async def test_a_comment_too_long_is_a_413_page(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    response = await client.post(reason_link(), data={"comment": "x" * 4001})
    assert response.status_code == 413 and "too long" in response.text
    assert await rows(pool) == []


async def test_stats_count_reasons_in_total_and_per_step(
    client: httpx.AsyncClient,
) -> None:
    given = [
        ("m-1", "reminder_1", "too_expensive"),
        ("m-2", "reminder_1", "too_expensive"),
        ("m-3", "reminder_1", "too_many_emails"),
        ("m-4", "reminder_3", "bad_experience"),
    ]
    for message, step, reason in given:
        link = reason_link(message=message, step=step, reason=reason)
        assert (await client.post(link, data={})).status_code == 200
    response = await client.get("/v1/leave-reasons/stats?windows=1d,30d", auth=("ak", ""))
    assert response.status_code == 200
    day, month = response.json()["windows"]
    assert day["window"] == "1d" and month["window"] == "30d"
    assert list(day["reasons"]) == [*LEAVE_REASONS, "total"]
    assert day["reasons"] == {
        "too_expensive": 2, "found_elsewhere": 0, "no_longer_needed": 0,
        "bad_experience": 1, "too_many_emails": 1, "other": 0, "total": 4,
    }  # fmt: skip
    assert [(s["plan"], s["step"], s["reasons"]["total"]) for s in day["by_step"]] == [
        ("anti_churn", "reminder_1", 3),
        ("anti_churn", "reminder_3", 1),
    ]
    assert day["by_step"][0]["reasons"]["too_expensive"] == 2
    assert month["reasons"] == day["reasons"]


async def test_stats_need_the_admin_key_and_valid_windows(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/leave-reasons/stats")).status_code == 401
    assert (await client.get("/v1/leave-reasons/stats", auth=("wk", ""))).status_code == 401
    bad = await client.get("/v1/leave-reasons/stats?windows=0d", auth=("ak", ""))
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "windows"
    empty = await client.get("/v1/leave-reasons/stats?windows=7d", auth=("ak", ""))
    assert empty.json()["windows"][0]["reasons"]["total"] == 0


async def test_concurrent_first_clicks_on_one_message_serialise(pool: asyncpg.Pool) -> None:
    repo = PostgresFeedbackRepository()
    submission = ReasonSubmission("s", "u", "m", "anti_churn", "reminder_1", "other", "hi")

    async def give(delay: float) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            previous = await repo.lock_leave_reason(conn, "s", "m")
            await asyncio.sleep(delay)
            outcome = record_reason(previous, submission, T0)
            if outcome.changed:
                await repo.save_leave_reason(conn, outcome.record)
            return outcome.changed

    assert sorted(await asyncio.gather(give(0.2), give(0.0))) == [False, True]
    async with pool.acquire() as conn:
        assert (
            await repo.lock_leave_reason(conn, "s", "m")
            == record_reason(None, submission, T0).record
        )
