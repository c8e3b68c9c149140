"""The unmodified Segment SDK and raw HTTP clients against ingest served by uvicorn."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from segment.analytics import Client
from segment.analytics.request import APIError

from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactAliased,
    ContactIdentified,
    OrderCompleted,
    PageViewed,
)


def sdk(live: Any, **options: Any) -> Client:
    return Client(live.write_key, host=live.url, sync_mode=True, max_retries=0, **options)


@pytest.mark.parametrize("use_gzip", [False, True])
def test_unmodified_segment_sdk_is_accepted(live_ingest: Any, use_gzip: bool) -> None:
    client = sdk(live_ingest, gzip=use_gzip)
    client.identify(
        "u1",
        {"email": "ann@example.com", "first_name": "Ann", "email_consent": "granted"},
        anonymous_id="v1",
    )
    client.track("u1", "Order Completed", {"order_id": "o1", "revenue": 19.9, "currency": "EUR"})
    client.track(
        anonymous_id="v2", event="Product Added", properties={"product_id": "p1", "price": 4}
    )
    client.alias("v2", "u2")
    client.page("u1", name="Home", properties={"url": "https://shop.test/"})
    kinds = [type(e.payload) for e in live_ingest.publisher.events]
    assert kinds == [
        ContactIdentified,
        ConsentChanged,
        ContactAliased,
        OrderCompleted,
        CartChanged,
        ContactAliased,
        CartChanged,
        PageViewed,
    ]
    merged = live_ingest.publisher.events[6]
    assert (merged.contact_key, merged.payload.change) == ("u2", "merged")
    assert all(e.shop_id == "shop1" for e in live_ingest.publisher.events)


def test_sdk_sees_an_error_when_the_bus_is_down(live_ingest: Any) -> None:
    live_ingest.publisher.fail = True
    client = sdk(live_ingest)
    with pytest.raises(APIError) as caught:
        client.track("u1", "Order Completed", {"order_id": "o1", "total": 1})
    assert caught.value.status == 503
    assert caught.value.response.headers["Retry-After"] == "2"
    assert live_ingest.publisher.events == []


def test_sdk_with_a_wrong_key_gets_401(live_ingest: Any) -> None:
    client = Client("not-a-key", host=live_ingest.url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as caught:
        client.track("u1", "Anything")
    assert caught.value.status == 401


def test_same_message_id_twice_gives_one_event_id(live_ingest: Any) -> None:
    client = sdk(live_ingest)
    for _ in range(2):
        client.track("u1", "Signed Up", message_id="fixed-1")
    first, second = live_ingest.publisher.events
    assert first.event_id == second.event_id


async def test_httpx_batch_with_gzip_and_errors(live_ingest: Any) -> None:
    now = datetime.now(UTC).isoformat()
    batch = [
        {"type": "track", "messageId": f"m{i}", "userId": "u", "event": "E", "timestamp": now}
        for i in range(100)
    ]
    async with httpx.AsyncClient(base_url=live_ingest.url, auth=(live_ingest.write_key, "")) as c:
        ok = await c.post(
            "/v1/batch",
            content=gzip.compress(orjson.dumps({"batch": batch})),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
        assert ok.status_code == 200
        assert len(live_ingest.publisher.events) == 100
        batch[7]["properties"] = {"x": 1}
        batch[7]["event"] = "Order Completed"
        bad = await c.post("/v1/batch", json={"batch": batch})
        assert bad.status_code == 400
        assert bad.json()["errors"][0] == {
            "index": 7,
            "field": "properties.order_id",
            "reason": "required",
        }
        assert len(live_ingest.publisher.events) == 100


async def _raw_post(
    url: str, path: str, headers: dict[str, str], body_size: int
) -> tuple[bytes, int]:
    """Send headers and stream a body until the server answers; returns (status line, sent)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    writer.write(head.encode() + b"\r\n")
    sent = 0
    chunk = b"x" * 16_384
    response = asyncio.ensure_future(reader.readline())
    while sent < body_size and not response.done():
        if "Transfer-Encoding" in headers:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            writer.write(chunk)
        sent += len(chunk)
        await writer.drain()
        await asyncio.sleep(0.005)
    status = await asyncio.wait_for(response, timeout=10)
    writer.close()
    return status, sent


@pytest.mark.parametrize(
    "framing",
    [{"Content-Length": str(50_000_000)}, {"Transfer-Encoding": "chunked"}],
)
async def test_oversize_body_is_413_before_it_is_all_sent(
    live_ingest: Any, framing: dict[str, str]
) -> None:
    import base64

    auth = base64.b64encode(f"{live_ingest.write_key}:".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json", **framing}
    status, sent = await _raw_post(live_ingest.url, "/v1/batch", headers, 50_000_000)
    assert b" 413 " in status
    assert sent < 5_000_000
    assert live_ingest.publisher.events == []


async def test_tracking_links_over_http(live_ingest: Any) -> None:
    claims = {"s": "shop1", "c": "u1", "m": "msg-9", "pl": None, "st": None}
    click = live_ingest.signer.mint("click", {**claims, "u": "https://shop.test/x"})
    unsub = live_ingest.signer.mint("unsub", {**claims, "ch": "email", "pu": "marketing"})
    async with httpx.AsyncClient(base_url=live_ingest.url) as c:
        redirect = await c.get(f"/t/c/{click}")
        assert (redirect.status_code, redirect.headers["location"]) == (302, "https://shop.test/x")
        assert (await c.get("/t/o/forged.gif")).content.startswith(b"GIF89a")
        one_click = await c.post(
            f"/u/{unsub}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200
    types = [e.type for e in live_ingest.publisher.events]
    assert types == ["email.link_clicked", "contact.consent_changed"]
