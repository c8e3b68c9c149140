"""The ingest router through the ASGI interface, with in-memory fakes around it."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest

from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    EmailOpened,
    LinkClicked,
    OrderCompleted,
)
from relance_ingest.settings import IngestSettings

AUTH = {"Authorization": "Basic d2tfdGVzdF8xOg=="}  # wk_test_1


def order(message_id: str = "m1", **props: Any) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "userId": "u1",
        "event": "Order Completed",
        "properties": {"order_id": "o1", "total": 10, **props},
        "timestamp": "2025-03-01T11:00:00Z",
    }


async def test_track_is_acknowledged_after_publish(harness: Any) -> None:
    response = await harness.client.post("/v1/track", json=order(), headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"success": True}
    (event,) = harness.publisher.events
    assert isinstance(event.payload, OrderCompleted)
    assert event.shop_id == "shop1"  # from the key, never the body


async def test_bus_down_gives_503_and_nothing_accepted(harness: Any) -> None:
    harness.publisher.fail = True
    body = {"batch": [{**order(), "type": "track"}, {**order("m2"), "type": "track"}]}
    response = await harness.client.post("/v1/batch", json=body, headers=AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert "none of the events were accepted" in response.json()["errors"][0]["reason"]
    assert harness.publisher.events == []


async def test_bus_down_leaves_carts_untouched(harness: Any) -> None:
    add = {
        "messageId": "c1",
        "userId": "u1",
        "event": "Product Added",
        "properties": {"product_id": "p", "quantity": 1},
    }
    harness.publisher.fail = True
    assert (await harness.client.post("/v1/track", json=add, headers=AUTH)).status_code == 503
    assert harness.carts.carts == {}
    harness.publisher.fail = False
    assert (await harness.client.post("/v1/track", json=add, headers=AUTH)).status_code == 200
    (event,) = harness.publisher.events
    assert isinstance(event.payload, CartChanged)
    assert event.payload.items[0].quantity == 1


async def test_retried_message_has_the_same_event_id(harness: Any) -> None:
    for _ in range(2):
        assert (
            await harness.client.post("/v1/track", json=order(), headers=AUTH)
        ).status_code == 200
    first, second = harness.publisher.events
    assert first.event_id == second.event_id


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic bm9wZTo="},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer x"},
    ],
)
async def test_unknown_auth_is_401(harness: Any, headers: dict[str, str]) -> None:
    response = await harness.client.post("/v1/track", json=order(), headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["field"] == "authorization"
    assert harness.publisher.events == []


async def test_batch_errors_name_index_and_field(harness: Any) -> None:
    batch = [{**order(f"m{i}"), "type": "track"} for i in range(5)]
    batch[3]["properties"]["total"] = "lots"
    batch[1]["timestamp"] = "2030-01-01T00:00:00Z"
    response = await harness.client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {(e["index"], e["field"]) for e in errors} == {
        (1, "timestamp"),
        (3, "properties.total"),
    }
    assert harness.publisher.events == []


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"{not json", "body"), (b"[]", ""), (b'"x"', ""), (b"{}", "messageId")],
)
async def test_malformed_bodies_are_400(harness: Any, body: bytes, field: str) -> None:
    response = await harness.client.post(
        "/v1/track", content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_batch_over_100_events_is_400(harness: Any) -> None:
    batch = [
        {"type": "track", "messageId": str(i), "userId": "u", "event": "E"} for i in range(101)
    ]
    response = await harness.client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "batch"


async def test_event_over_32kb_in_a_batch_is_413_with_index(harness: Any) -> None:
    batch = [
        {"type": "track", "messageId": "a", "userId": "u", "event": "E"},
        {
            "type": "track",
            "messageId": "b",
            "userId": "u",
            "event": "E",
            "properties": {"blob": "x" * 33_000},
        },
    ]
    response = await harness.client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["errors"][0]["index"] == 1


async def test_a_batch_over_32kb_of_events_under_it_is_accepted(harness: Any) -> None:
    batch = [
        {
            "type": "track",
            "messageId": f"m{i}",
            "userId": "u",
            "event": "E",
            "properties": {"blob": "x" * 20_000},
        }
        for i in range(3)
    ]
    response = await harness.client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 200, response.text


async def test_single_event_body_over_32kb_is_413(harness: Any) -> None:
    big = order(blob="x" * 40_000)
    response = await harness.client.post("/v1/track", json=big, headers=AUTH)
    assert response.status_code == 413


async def test_gzip_body_is_decoded(harness: Any) -> None:
    body = gzip.compress(orjson.dumps({"batch": [{**order(), "type": "track"}]}))
    headers = {**AUTH, "content-encoding": "gzip", "content-type": "application/json"}
    response = await harness.client.post("/v1/batch", content=body, headers=headers)
    assert response.status_code == 200
    assert len(harness.publisher.events) == 1


async def test_gzip_bomb_is_413(harness: Any) -> None:
    bomb = gzip.compress(b"{" + b" " * 50_000_000 + b"}")
    assert len(bomb) < 100_000
    headers = {**AUTH, "content-encoding": "gzip", "content-type": "application/json"}
    response = await harness.client.post("/v1/batch", content=bomb, headers=headers)
    assert response.status_code == 413


async def test_broken_gzip_is_400_and_unknown_encoding_415(harness: Any) -> None:
    headers = {**AUTH, "content-encoding": "gzip"}
    bad = await harness.client.post("/v1/track", content=b"not gzip", headers=headers)
    assert bad.status_code == 400
    headers = {**AUTH, "content-encoding": "br"}
    unknown = await harness.client.post("/v1/track", content=b"{}", headers=headers)
    assert unknown.status_code == 415


async def test_rate_limit_is_429_with_retry_after(make_harness: Any) -> None:
    harness = make_harness(IngestSettings(rate_per_s=1, rate_burst=2))
    codes = [
        (await harness.client.post("/v1/track", json=order(f"m{i}"), headers=AUTH)).status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]
    response = await harness.client.post("/v1/track", json=order("m9"), headers=AUTH)
    assert int(response.headers["retry-after"]) >= 1
    other = await harness.client.post(
        "/v1/track", json=order("m9"), headers=harness.basic("wk_other")
    )
    assert other.status_code == 200


# --- tracking and unsubscribe ----------------------------------------------------------


def claims(**extra: Any) -> dict[str, Any]:
    return {"s": "shop1", "c": "u1", "m": "msg-1", "pl": "welcome", "st": "j0", **extra}


async def test_pixel_publishes_an_open_for_a_valid_token(harness: Any) -> None:
    token = harness.signer.mint("open", claims())
    response = await harness.client.get(f"/t/o/{token}.gif")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    (event,) = harness.publisher.events
    assert isinstance(event.payload, EmailOpened)
    assert (event.payload.message_id, event.payload.plan) == ("msg-1", "welcome")


async def test_pixel_with_a_bad_token_still_answers_a_gif(harness: Any) -> None:
    click_token = harness.signer.mint("click", claims(u="https://x.test"))
    for token in ("garbage", click_token, click_token[:-2] + "AA"):
        response = await harness.client.get(f"/t/o/{token}.gif")
        assert response.status_code == 200
        assert response.content.startswith(b"GIF89a")
    assert harness.publisher.events == []


async def test_click_redirects_only_to_the_signed_url(harness: Any) -> None:
    token = harness.signer.mint("click", claims(u="https://shop.test/p/1"))
    response = await harness.client.get(f"/t/c/{token}?u=https://evil.test/")
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.test/p/1"
    (event,) = harness.publisher.events
    assert isinstance(event.payload, LinkClicked)
    assert event.payload.url == "https://shop.test/p/1"


async def test_tampered_click_is_400_and_publishes_nothing(harness: Any) -> None:
    token = harness.signer.mint("click", claims(u="https://shop.test/"))
    kid, _body, sig = token.split(".")
    forged = harness.signer.mint("click", claims(u="https://evil.test/")).split(".")[1]
    for bad in (f"{kid}.{forged}.{sig}", "x.y.z", harness.signer.mint("open", claims())):
        response = await harness.client.get(f"/t/c/{bad}")
        assert response.status_code == 400
        assert "location" not in response.headers
    assert harness.publisher.events == []


async def test_one_click_unsubscribe_form_and_multipart(harness: Any) -> None:
    token = harness.signer.mint(
        "unsub", {"s": "shop1", "c": "u1", "m": "msg-1", "ch": "email", "pu": "marketing"}
    )
    form = await harness.client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    multipart = await harness.client.post(
        f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")}
    )
    for response in (form, multipart):
        assert response.status_code == 200
        assert "location" not in response.headers
        assert "set-cookie" not in response.headers
    first, second = harness.publisher.events
    assert isinstance(first.payload, ConsentChanged)
    assert (first.payload.channel, first.payload.purpose, first.payload.status) == (
        "email",
        "marketing",
        "denied",
    )
    assert first.payload.origin == "unsubscribe_link"
    assert first.event_id == second.event_id  # idempotent downstream


async def test_unsubscribe_get_shows_a_button_and_changes_nothing(harness: Any) -> None:
    token = harness.signer.mint(
        "unsub", {"s": "shop1", "c": "u1", "m": "m", "ch": "sms", "pu": "marketing"}
    )
    response = await harness.client.get(f"/u/{token}")
    assert response.status_code == 200
    assert 'name="List-Unsubscribe" value="One-Click"' in response.text
    assert "SMS" in response.text
    assert harness.publisher.events == []


async def test_unsubscribe_rejects_bad_token_and_missing_body(harness: Any) -> None:
    token = harness.signer.mint(
        "unsub", {"s": "shop1", "c": "u1", "m": "m", "ch": "email", "pu": "marketing"}
    )
    no_body = await harness.client.post(f"/u/{token}")
    bad = await harness.client.post("/u/bad.token.x", data={"List-Unsubscribe": "One-Click"})
    assert (no_body.status_code, bad.status_code) == (400, 400)
    assert (await harness.client.get("/u/bad.token.x")).status_code == 400
    assert harness.publisher.events == []


async def test_unsubscribe_with_bus_down_is_503(harness: Any) -> None:
    token = harness.signer.mint(
        "unsub", {"s": "shop1", "c": "u1", "m": "m", "ch": "email", "pu": "marketing"}
    )
    harness.publisher.fail = True
    response = await harness.client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 503
    assert "retry-after" in response.headers
