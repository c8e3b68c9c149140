"""The delivery worker against PostgreSQL and a real HTTP receiver on loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook

from relance_feedback.domain.answers import Submission
from relance_feedback.domain.delivery import DeliveryPolicy
from relance_feedback.domain.signing import webhook_id


def unhappy(order: str = "o-1", user: str = "u-1", comment: str | None = "broken") -> Submission:
    return Submission("shop-1", order, user, "not_satisfied", None, comment, "email", "m-1")


async def alert_row(pool: asyncpg.Pool, order: str = "o-1") -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM feedback_alerts WHERE order_id = $1", order)


async def test_500_500_429_then_200_is_delivered_once_with_stable_id(
    pool: asyncpg.Pool, receiver: Any, fb: Any
) -> None:
    service, worker = fb.build(pool, receiver.url, (fb.SECRET,))
    t0 = datetime.now(UTC)
    await fb.seed(service, pool, "shop-1", "u-1", "o-1", t0)
    receiver.script = [(500, {}), (500, {}), (429, {"retry-after": "20"}), (200, {})]
    await service.submit(unhappy(), t0)

    first = await worker.deliver_due(t0)
    assert [(r.attempt, r.status, r.state) for r in first] == [(1, 500, "pending")]
    assert first[0].next_attempt_at is not None
    wait = first[0].next_attempt_at - t0
    assert timedelta(seconds=1) <= wait <= timedelta(seconds=1.1)
    assert await worker.deliver_due(t0 + timedelta(seconds=0.5)) == []

    t1 = first[0].next_attempt_at
    second = await worker.deliver_due(t1)
    assert [(r.attempt, r.status) for r in second] == [(2, 500)]
    t2 = second[0].next_attempt_at
    assert t2 is not None and timedelta(seconds=2) <= t2 - t1 <= timedelta(seconds=2.2)

    third = await worker.deliver_due(t2)
    assert [(r.attempt, r.status) for r in third] == [(3, 429)]
    assert third[0].next_attempt_at == t2 + timedelta(seconds=20)  # Retry-After beats 3 s

    t3 = third[0].next_attempt_at
    fourth = await worker.deliver_due(t3)
    assert [(r.attempt, r.status, r.state) for r in fourth] == [(4, 200, "sent")]
    assert await worker.deliver_due(t3 + timedelta(hours=1)) == []

    assert len(receiver.received) == 4
    assert all(r.verified for r in receiver.received)
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {webhook_id("shop-1", "o-1", "u-1")}
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    assert len({r.body for r in receiver.received}) == 1
    data = json.loads(receiver.received[0].body)["data"]
    assert data["contact"]["name"] == "Ada Lovelace"
    assert data["contact"]["phone"] == "+33612345678"
    assert data["order"]["total"] == "59.9000"
    assert data["order"]["items"][0]["name"] == "Teapot"
    assert data["comment"] == "broken"
    assert data["contact"]["url"] == "https://relance.example/v1/contacts/u-1"

    row = await alert_row(pool)
    assert (row["state"], row["attempts"], row["last_status"]) == ("sent", 4, 200)
    attempts = await pool.fetch(
        "SELECT attempt, status FROM feedback_alert_attempts ORDER BY attempt"
    )
    assert [(a["attempt"], a["status"]) for a in attempts] == [
        (1, 500), (2, 500), (3, 429), (4, 200),
    ]  # fmt: skip


async def test_410_disables_the_endpoint_and_later_alerts_fail_visibly(
    pool: asyncpg.Pool, receiver: Any, fb: Any
) -> None:
    service, worker = fb.build(pool, receiver.url, (fb.SECRET,))
    t0 = datetime.now(UTC)
    receiver.script = [(410, {})]
    await service.submit(unhappy("o-1"), t0)
    (report,) = await worker.deliver_due(t0)
    assert (report.state, report.status) == ("failed", 410)
    disabled = await pool.fetchval(
        "SELECT disabled_at FROM feedback_endpoints WHERE url = $1", receiver.url
    )
    assert disabled is not None

    await service.submit(unhappy("o-2"), t0)
    (second,) = await worker.deliver_due(t0)
    assert second.state == "failed"
    assert "disabled" in (second.error or "")
    assert len(receiver.received) == 1  # the second alert was not sent
    stats = await service.stats("shop-1", (1,), t0 + timedelta(seconds=1))
    assert (stats[0].alerts.failed, stats[0].alerts.sent) == (2, 0)


async def test_a_redirect_is_a_failure_and_is_not_followed(
    pool: asyncpg.Pool, receiver: Any, fb: Any
) -> None:
    service, worker = fb.build(pool, receiver.url, (fb.SECRET,))
    t0 = datetime.now(UTC)
    receiver.script = [(302, {"location": receiver.url.replace("/hooks/support", "/other")})]
    await service.submit(unhappy(), t0)
    (report,) = await worker.deliver_due(t0)
    assert (report.state, report.status, report.error) == ("pending", 302, "http 302")
    assert [r.path for r in receiver.received] == ["/hooks/support"]


async def test_a_hanging_endpoint_times_out_and_is_retried(
    pool: asyncpg.Pool, receiver: Any, fb: Any
) -> None:
    service, worker = fb.build(pool, receiver.url, (fb.SECRET,), timeout_s=0.5)
    t0 = datetime.now(UTC)
    receiver.script = ["hang", (200, {})]
    await service.submit(unhappy(), t0)
    (report,) = await worker.deliver_due(t0)
    assert (report.state, report.status, report.error) == ("pending", None, "timeout")
    assert report.next_attempt_at is not None
    (retry,) = await worker.deliver_due(report.next_attempt_at)
    assert retry.state == "sent"


async def test_after_the_last_attempt_the_alert_stays_failed(
    pool: asyncpg.Pool, receiver: Any, fb: Any
) -> None:
    policy = DeliveryPolicy(schedule=(timedelta(0), timedelta(seconds=1)), jitter=0.0)
    service, worker = fb.build(pool, receiver.url, (fb.SECRET,), policy=policy)
    t0 = datetime.now(UTC)
    receiver.script = [(500, {}), (503, {})]
    await service.submit(unhappy(), t0)
    await worker.deliver_due(t0)
    (last,) = await worker.deliver_due(t0 + timedelta(seconds=1))
    assert (last.attempt, last.state) == (2, "failed")
    row = await alert_row(pool)
    assert (row["state"], row["last_status"], row["next_attempt_at"]) == ("failed", 503, None)
    assert await worker.deliver_due(t0 + timedelta(days=3)) == []
    stats = await service.stats("shop-1", (7,), t0 + timedelta(seconds=2))
    assert stats[0].alerts.failed == 1


async def test_rotation_signs_with_both_secrets(pool: asyncpg.Pool, receiver: Any, fb: Any) -> None:
    service, worker = fb.build(pool, receiver.url, (fb.SECRET, fb.OLD_SECRET), payload="slack")
    t0 = datetime.now(UTC)
    await service.submit(unhappy(), t0)
    await worker.deliver_due(t0)
    (got,) = receiver.received
    assert got.verified
    headers = got.headers
    assert Webhook(fb.OLD_SECRET).verify(got.body, headers)["text"].startswith("Not satisfied")
    assert len(headers["webhook-signature"].split(" ")) == 2


async def test_without_an_endpoint_the_alert_goes_to_the_local_file(
    pool: asyncpg.Pool, fb: Any, tmp_path: Path
) -> None:
    path = tmp_path / "outbox" / "support_alerts.jsonl"
    service, worker = fb.build(pool, None, (fb.SECRET,), alert_file=path)
    t0 = datetime.now(UTC)
    await fb.seed(service, pool, "shop-1", "u-1", "o-1", t0)
    outcome = await service.submit(unhappy(), t0)
    assert outcome.alert
    (report,) = await worker.deliver_due(t0)
    assert (report.state, report.status, report.error) == ("sent", None, None)
    (line,) = path.read_text().splitlines()
    written = json.loads(line)
    assert written["headers"]["webhook-id"] == webhook_id("shop-1", "o-1", "u-1")
    assert written["headers"]["webhook-signature"].startswith("v1,")
    assert written["alert"]["data"]["contact"]["email"] == "ada@example.com"
    assert written["alert"]["data"]["comment"] == "broken"
    row = await alert_row(pool)
    assert (row["state"], row["url"]) == ("sent", path.resolve().as_uri())
    assert await worker.deliver_due(t0 + timedelta(hours=1)) == []
    stats = await service.stats("shop-1", (1,), t0 + timedelta(seconds=1))
    assert (stats[0].alerts.sent, stats[0].alerts.failed) == (1, 0)


@pytest.mark.parametrize("mode", ["minimal"])
async def test_minimal_payload_carries_ids_only(
    pool: asyncpg.Pool, receiver: Any, fb: Any, mode: str
) -> None:
    service, worker = fb.build(pool, receiver.url, (fb.SECRET,), payload=mode)  # type: ignore[arg-type]
    t0 = datetime.now(UTC)
    await fb.seed(service, pool, "shop-1", "u-1", "o-1", t0)
    await service.submit(unhappy(), t0)
    await worker.deliver_due(t0)
    (got,) = receiver.received
    assert json.loads(got.body)["data"] == {
        "shop_id": "shop-1",
        "answer_id": json.loads(got.body)["data"]["answer_id"],
        "user_id": "u-1",
        "order_id": "o-1",
    }
    assert b"ada@example.com" not in got.body
