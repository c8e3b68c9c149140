"""The feedback component as `relance up` runs it: on the shared platform (PostgreSQL log
bus, platform outbox and inbox, key store, token signer), with its consumer and alert worker
running, answered over HTTP, alerts received by a real loopback receiver."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from standardwebhooks import Webhook

from relance_events import Event, decode, new_event, topics
from relance_events.payloads import (
    ContactIdentified,
    ContactTraits,
    LineItem,
    OrderCompleted,
    PageViewed,
)
from relance_feedback.bootstrap import build, wire
from relance_feedback.domain.signing import webhook_id
from relance_feedback.settings import FeedbackSettings
from relance_runtime.auth import install_auth_handler
from relance_runtime.bus.ports import Record
from relance_runtime.consumer import Delivery
from relance_runtime.platform import Platform
from relance_runtime.service import Component

from ...support import eventually

SHOP = "shop"


def settings_for(url: str | None, secret: str | None) -> FeedbackSettings:
    return FeedbackSettings(
        support_webhook_url=url,
        support_webhook_secret=secret,
        support_webhook_secret_previous=None,
        support_webhook_payload="full",
        webhook_allowlist="127.0.0.1",
        feedback_delivery_idle_s=1.0,
    )


class Running:
    def __init__(self, platform: Platform, component: Component) -> None:
        self.platform = platform
        self.component = component
        api = FastAPI()
        install_auth_handler(api)
        for router in component.routers():
            api.include_router(router)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t")

    def survey_link(self, order: str, user: str, answer: str = "not_satisfied") -> str:
        claims = {"s": SHOP, "c": user, "m": f"m-{order}", "o": order, "a": answer}
        return f"/s/{self.platform.tokens.mint('survey', claims)}"


@pytest.fixture(params=["platform", "kafka_platform"])
def any_platform(request: pytest.FixtureRequest) -> Platform:
    """The full path runs on the PostgreSQL log bus and on real Kafka (outbox + relay)."""
    chosen: Platform = request.getfixturevalue(request.param)
    return chosen


@pytest.fixture
async def start(platform: Platform) -> AsyncIterator[Callable[[FeedbackSettings], Any]]:
    started: list[Running] = []

    async def _start(settings: FeedbackSettings) -> Running:
        component = build(platform, settings)
        await component.start()
        running = Running(platform, component)
        started.append(running)
        return running

    yield _start
    for running in started:
        await running.http.aclose()
        await running.component.stop()


async def customer(platform: Platform, user: str, order: str) -> list[Event[Any]]:
    """Publish what ingest would: who the customer is and what they bought."""
    events = customer_events(user, order)
    await platform.bus.publish(events)
    return events


def customer_events(user: str, order: str) -> list[Event[Any]]:
    at = datetime.now(UTC)
    events: list[Event[Any]] = [
        new_event(
            ContactIdentified(
                user_id=user,
                traits=ContactTraits(first_name="Ada", last_name="Lovelace",
                                     email=f"{user}@example.com", phone="+33612345678"),
            ),
            shop_id=SHOP, contact_key=user, source="test", occurred_at=at,
        ),
        new_event(
            OrderCompleted(
                order_id=order, total=Decimal("59.90"),
                items=[LineItem(product_id="p1", name="Teapot", price=Decimal("59.90"))],
            ),
            shop_id=SHOP, contact_key=user, source="test", occurred_at=at,
        ),
    ]  # fmt: skip
    return events


async def known(platform: Platform, users: list[str], orders: list[str]) -> bool:
    contacts = await platform.pool.fetchval(
        "SELECT count(*) FROM feedback_contacts WHERE contact_key = ANY($1::text[])", users
    )
    bought = await platform.pool.fetchval(
        "SELECT count(*) FROM feedback_orders WHERE order_id = ANY($1::text[])", orders
    )
    return bool(contacts == len(users) and bought == len(orders))


async def test_answer_to_signed_alert_and_survey_answered_on_the_bus(
    any_platform: Platform, receiver: Any, fb: Any
) -> None:
    platform = any_platform
    component = build(platform, settings_for(receiver.url, fb.SECRET))
    await component.start()
    running = Running(platform, component)
    try:
        await full_path(platform, running, receiver, fb)
    finally:
        await running.http.aclose()
        await component.stop()


async def full_path(platform: Platform, running: Running, receiver: Any, fb: Any) -> None:
    seeded = await customer(platform, "u-1", "o-1")
    noise = new_event(
        PageViewed(name="home"), shop_id=SHOP, contact_key="u-1", source="test",
        occurred_at=datetime.now(UTC),
    )  # fmt: skip
    await platform.bus.publish([noise])
    await eventually(lambda: known(platform, ["u-1"], ["o-1"]), timeout_s=30)

    link = running.survey_link("o-1", "u-1")
    page = await running.http.get(link)  # a mail scanner's prefetch
    assert page.status_code == 200 and "Not satisfied" in page.text
    await asyncio.sleep(1.2)  # longer than the worker's poll: nothing may leave
    assert receiver.received == []

    posted = await running.http.post(link, data={"comment": "The lid was cracked"})
    assert posted.status_code == 200
    await eventually(lambda: asyncio.sleep(0, receiver.received))
    (got,) = receiver.received
    assert got.verified
    assert Webhook(fb.SECRET).verify(got.body, got.headers)["type"] == "survey.not_satisfied"
    assert got.headers["webhook-id"] == webhook_id(SHOP, "o-1", "u-1")
    data = json.loads(got.body)["data"]
    assert data["contact"] == {
        "user_id": "u-1",
        "name": "Ada Lovelace",
        "email": "u-1@example.com",
        "phone": "+33612345678",
        "url": f"{platform.settings.public_url}/v1/contacts/u-1",
    }
    assert (data["order"]["id"], data["order"]["total"]) == ("o-1", "59.9000")
    assert data["order"]["items"][0]["name"] == "Teapot"
    assert (data["answer"], data["comment"]) == ("not_satisfied", "The lid was cracked")

    # The consumer applied the two events it needs, through the inbox, and nothing else.
    claimed = {
        r["event_id"]
        for r in await platform.pool.fetch(
            "SELECT event_id FROM runtime_inbox WHERE consumer = 'feedback'"
        )
    }
    assert claimed == {e.event_id for e in seeded}

    reader = platform.bus.consumer(f"reader-{uuid.uuid4().hex[:6]}", [
        platform.names.of(topics.EVENTS)
    ])  # fmt: skip
    await reader.start()
    try:
        answered: list[Event[Any]] = []

        async def survey_answered() -> list[Event[Any]]:
            for record in await reader.poll(max_records=100, timeout_s=0.2):
                event = decode(record.value)
                if event.type == "survey.answered":
                    answered.append(event)
            return answered

        (event,) = await eventually(survey_answered, timeout_s=30)
    finally:
        await reader.stop()
    assert (event.shop_id, event.contact_key, event.source) == (SHOP, "u-1", "feedback")
    assert (event.payload.order_id, event.payload.answer) == ("o-1", "not_satisfied")
    assert event.payload.message_id == "m-o-1"

    stats = await running.http.get("/v1/surveys/stats?windows=1d", auth=("ak-test", ""))
    assert stats.json()["windows"][0]["alerts"] == {"pending": 0, "sent": 1, "failed": 0}
    assert (await running.http.get("/v1/surveys/stats")).status_code == 401
    api = await running.http.post(
        "/v1/surveys/answers", auth=("wk-test", ""),
        json={"user_id": "u-1", "order_id": "o-1", "answer": "not_satisfied", "nps": 2},
    )  # fmt: skip
    assert api.status_code == 200 and api.json() == {
        "answer_id": str(event.payload.answer_id), "changed": True, "alert": False
    }  # fmt: skip
    await asyncio.sleep(1.2)
    assert len(receiver.received) == 1  # one alert per answer, ever


async def test_without_a_webhook_alerts_go_to_the_outbox_file(
    platform: Platform, start: Any
) -> None:
    running: Running = await start(settings_for(None, None))
    await customer(platform, "u-2", "o-2")
    await eventually(lambda: known(platform, ["u-2"], ["o-2"]))
    posted = await running.http.post(running.survey_link("o-2", "u-2"), data={"comment": "late"})
    assert posted.status_code == 200
    path = platform.settings.data_dir / "outbox" / "support_alerts.jsonl"

    async def lines() -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    (line,) = await eventually(lines)
    written = json.loads(line)
    assert written["headers"]["webhook-id"] == webhook_id(SHOP, "o-2", "u-2")
    assert "webhook-signature" not in written["headers"]  # no secret configured
    assert written["alert"]["data"]["contact"]["email"] == "u-2@example.com"
    assert written["alert"]["data"]["comment"] == "late"
    row = await platform.pool.fetchrow("SELECT state, attempts, last_error FROM feedback_alerts")
    assert dict(row) == {"state": "sent", "attempts": 1, "last_error": None}


async def test_p99_from_answer_post_to_alert_leaving_is_under_2s(
    platform: Platform, start: Any, receiver: Any, fb: Any
) -> None:
    answers = 50
    running: Running = await start(settings_for(receiver.url, fb.SECRET))
    users = [f"u-{i}" for i in range(answers)]
    orders = [f"o-{i}" for i in range(answers)]
    for user, order in zip(users, orders, strict=True):
        await customer(platform, user, order)
    await eventually(lambda: known(platform, users, orders), timeout_s=30)

    started: dict[str, float] = {}
    gate = asyncio.Semaphore(10)

    async def answer(user: str, order: str) -> None:
        link = running.survey_link(order, user)
        async with gate:
            started[webhook_id(SHOP, order, user)] = time.perf_counter()
            response = await running.http.post(link, data={"comment": "no"})
            assert response.status_code == 200

    await asyncio.gather(*(answer(u, o) for u, o in zip(users, orders, strict=True)))
    await eventually(lambda: asyncio.sleep(0, len(receiver.received) >= answers), timeout_s=30)
    arrived = {r.headers["webhook-id"]: r.at for r in receiver.received}
    assert set(arrived) == set(started)
    assert all(r.verified for r in receiver.received)
    latencies = sorted(arrived[k] - started[k] for k in started)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    assert p99 < 2.0, f"p99 {p99:.3f}s, p50 {latencies[len(latencies) // 2]:.3f}s"


async def test_the_component_stops_cleanly_with_an_alert_in_flight(
    platform: Platform, receiver: Any, fb: Any
) -> None:
    component = build(platform, settings_for(receiver.url, fb.SECRET))
    await component.start()
    running = Running(platform, component)
    receiver.script = ["hang"]
    await running.http.post(running.survey_link("o-3", "u-3"), data={})
    await eventually(lambda: asyncio.sleep(0, receiver.received))
    began = time.monotonic()
    await component.stop()
    await running.http.aclose()
    assert time.monotonic() - began < platform.settings.drain_timeout_s + 2
    assert not any(component.readiness().values())
    # The cut attempt stays leased, pending: it is retried, never lost.
    row = await platform.pool.fetchrow("SELECT state, next_attempt_at FROM feedback_alerts")
    assert row["state"] == "pending" and row["next_attempt_at"] > datetime.now(UTC)


async def test_a_redelivered_batch_changes_nothing(platform: Platform) -> None:
    handler = wire(platform, settings_for(None, None)).handler
    record = Record(topic="t", partition=0, offset=0, key=None, value=b"")
    identified, completed = customer_events("u-4", "o-4")
    noise = new_event(
        PageViewed(name="home"), shop_id=SHOP, contact_key="u-4", source="test",
        occurred_at=datetime.now(UTC),
    )  # fmt: skip
    await handler([Delivery(record, e) for e in (identified, noise, completed, identified)])
    replayed = identified.model_copy(
        update={"payload": ContactIdentified(user_id="u-4", traits=ContactTraits(email="x@y.z"))}
    )
    await handler([Delivery(record, replayed)])
    email = await platform.pool.fetchval(
        "SELECT email FROM feedback_contacts WHERE contact_key = 'u-4'"
    )
    assert email == "u-4@example.com"
    claimed = await platform.pool.fetch("SELECT event_id FROM runtime_inbox")
    assert {r["event_id"] for r in claimed} == {identified.event_id, completed.event_id}
