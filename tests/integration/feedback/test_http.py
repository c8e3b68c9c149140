"""The router through a real ASGI app, with PostgreSQL and the loopback receiver."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request

from relance_feedback.domain.answers import Submission
from relance_feedback.http import ApiKeyKind, FeedbackDeps, build_router
from relance_runtime.auth import StaticKeyStore, authenticate, install_auth_handler
from relance_runtime.clock import SystemClock
from relance_runtime.tokens import TokenSigner

SIGNER = TokenSigner({"k1": b"0123456789abcdef0123"}, "k1")
KEYS = StaticKeyStore.from_settings("shop-1:wk", "shop-1:ak")


async def shop_of(request: Request, kind: ApiKeyKind) -> str:
    return await authenticate(KEYS, kind, request.headers.get("authorization"))


def survey_link(answer: str, order: str = "o-1", user: str = "u-1") -> str:
    token = SIGNER.mint("survey", {"s": "shop-1", "c": user, "m": "m-1", "o": order, "a": answer})
    return f"/s/{token}"


@pytest.fixture
async def app(pool: asyncpg.Pool, receiver: Any, fb: Any) -> Any:
    service, worker = fb.build(pool, receiver.url, (fb.SECRET,))
    api = FastAPI()
    install_auth_handler(api)
    api.include_router(build_router(FeedbackDeps(service, SIGNER, shop_of, SystemClock())))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t")
    async with client:
        yield client, worker, service


async def count(pool: asyncpg.Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def test_a_prefetch_get_registers_nothing(app: Any, pool: asyncpg.Pool, receiver: Any):
    client, worker, _ = app
    response = await client.get(survey_link("not_satisfied"))
    assert response.status_code == 200
    assert "Not satisfied" in response.text
    assert '<form method="post">' in response.text
    assert response.headers["cache-control"] == "no-store"
    assert await count(pool, "feedback_answers") == 0
    assert await count(pool, "feedback_alerts") == 0
    assert await worker.deliver_due(datetime.now(UTC)) == []
    assert receiver.received == []
    assert await count(pool, "runtime_outbox") == 0


async def test_a_double_post_is_one_answer_one_alert_one_event(
    app: Any, pool: asyncpg.Pool, receiver: Any, fb: Any
) -> None:
    client, worker, _ = app
    link = survey_link("not_satisfied")
    for _ in range(2):
        response = await client.post(link, data={"comment": "Lid was <b>cracked</b>"})
        assert response.status_code == 200
        assert "recorded" in response.text
    assert await count(pool, "feedback_answers") == 1
    assert await count(pool, "feedback_alerts") == 1
    await worker.deliver_due(datetime.now(UTC))
    await worker.deliver_due(datetime.now(UTC))
    assert len(receiver.received) == 1 and receiver.received[0].verified
    assert b"Lid was <b>cracked</b>" in receiver.received[0].body
    (event,) = await fb.staged(pool)
    assert event.type == "survey.answered"
    assert (event.payload.answer, event.payload.comment) == (
        "not_satisfied",
        "Lid was <b>cracked</b>",
    )
    assert (event.shop_id, event.contact_key, event.payload.order_id) == ("shop-1", "u-1", "o-1")


async def test_invalid_links_are_refused(app: Any) -> None:
    client, _, _ = app
    bad = SIGNER.mint("click", {"s": "shop-1", "c": "u", "m": "m", "u": "https://x"})
    for path in ("/s/garbage", f"/s/{bad}", survey_link("delighted")):
        assert (await client.get(path)).status_code == 400
        assert (await client.post(path, data={})).status_code == 400


async def test_the_answers_api_takes_choices_and_nps(app: Any, pool: asyncpg.Pool, fb: Any) -> None:
    client, _, _ = app
    auth = ("wk", "")
    first = await client.post(
        "/v1/surveys/answers", auth=auth,
        json={"user_id": "u-9", "order_id": "o-9", "answer": "satisfied", "comment": "ok"},
    )  # fmt: skip
    assert first.status_code == 200
    assert first.json()["changed"] is True and first.json()["alert"] is False
    nps = await client.post(
        "/v1/surveys/answers", auth=auth, json={"user_id": "u-9", "order_id": "o-9", "nps": 10}
    )
    assert nps.json()["answer_id"] == first.json()["answer_id"]
    row = await pool.fetchrow("SELECT choice, nps, comment, origin FROM feedback_answers")
    assert dict(row) == {"choice": "satisfied", "nps": 10, "comment": "ok", "origin": "api"}
    again = await client.post(
        "/v1/surveys/answers", auth=auth, json={"user_id": "u-9", "order_id": "o-9", "nps": 10}
    )
    assert again.json()["changed"] is False
    events = await fb.staged(pool)
    assert [(e.payload.answer, e.payload.nps, e.payload.origin) for e in events] == [
        ("satisfied", None, "api"),
        ("satisfied", 10, "api"),
    ]
    assert len({e.event_id for e in events}) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u", "order_id": "o"}, "answer"),
        ({"user_id": "u", "order_id": "o", "nps": 11}, "nps"),
        ({"user_id": "u", "order_id": "o", "nps": "9"}, "nps"),
        ({"user_id": "u", "order_id": "o", "answer": "meh"}, "answer"),
        ({"order_id": "o", "answer": "satisfied"}, "user_id"),
        ({"user_id": "u", "order_id": "o", "answer": "satisfied", "extra": 1}, "extra"),
    ],
)
async def test_bad_answers_get_field_errors(app: Any, body: dict[str, Any], field: str) -> None:
    client, _, _ = app
    response = await client.post("/v1/surveys/answers", auth=("wk", ""), json=body)
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_keys_are_checked_by_kind(app: Any) -> None:
    client, _, _ = app
    body = {"user_id": "u", "order_id": "o", "answer": "satisfied"}
    assert (await client.post("/v1/surveys/answers", json=body)).status_code == 401
    assert (await client.post("/v1/surveys/answers", auth=("ak", ""), json=body)).status_code == 401
    assert (await client.get("/v1/surveys/stats", auth=("wk", ""))).status_code == 401


async def test_stats_report_csat_nps_and_alerts(app: Any) -> None:
    client, worker, _ = app
    auth = ("wk", "")
    answers = [("very_satisfied", 10), ("satisfied", 9), ("not_satisfied", 3), ("satisfied", 7)]
    for i, (choice, score) in enumerate(answers):
        await client.post(
            "/v1/surveys/answers", auth=auth,
            json={"user_id": f"u{i}", "order_id": f"o{i}", "answer": choice, "nps": score},
        )  # fmt: skip
    await worker.deliver_due(datetime.now(UTC))
    response = await client.get("/v1/surveys/stats?windows=1d,30d", auth=("ak", ""))
    assert response.status_code == 200
    day, month = response.json()["windows"]
    assert day["window"] == "1d" and month["window"] == "30d"
    assert day["answers"] == {"very_satisfied": 1, "satisfied": 2, "not_satisfied": 1, "total": 4}
    assert day["csat"] == 75.0
    assert day["nps"]["score"] == 25.0
    assert day["alerts"] == {"pending": 0, "sent": 1, "failed": 0}
    bad = await client.get("/v1/surveys/stats?windows=0d", auth=("ak", ""))
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "windows"


async def test_the_answer_and_its_event_commit_or_roll_back_together(
    app: Any, pool: asyncpg.Pool
) -> None:
    _, _, service = app
    submission = Submission("shop-1", "o-7", "u-7", "not_satisfied", None, "x", "api", None)

    async def answer_then_fail() -> None:
        async with pool.acquire() as conn, conn.transaction():
            outcome = await service.submit_in(conn, submission, datetime.now(UTC))
            assert outcome.alert
            assert await conn.fetchval("SELECT count(*) FROM runtime_outbox") == 1
            raise RuntimeError("the request failed after the answer")

    with pytest.raises(RuntimeError, match="failed after the answer"):
        await answer_then_fail()
    for table in ("feedback_answers", "feedback_alerts", "runtime_outbox"):
        assert await count(pool, table) == 0, table
