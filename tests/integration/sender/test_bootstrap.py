"""The wired sender component on the shared platform (PostgreSQL log bus)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from relance_events import new_event
from relance_events.payloads import ConsentChanged
from relance_runtime.auth import install_auth_handler
from relance_runtime.platform import Platform
from relance_sender.bootstrap import build

from ...support import eventually as wait_for
from .conftest import ScriptedSmtpHandler, birthday_request, ledger_state, logged_events


async def test_a_request_is_sent_once_and_reported(
    platform: Platform,
    smtp_server: tuple[ScriptedSmtpHandler, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, port = smtp_server
    monkeypatch.setenv("RELANCE_SMTP_URL", f"smtp://127.0.0.1:{port}")
    component = build(platform)
    await component.start()
    try:
        request = birthday_request("m-wired-1")
        await platform.bus.publish([request])
        await platform.bus.publish([request])  # a redelivery: no second email
        await wait_for(lambda: ledger_state(platform.pool, "m-wired-1"), timeout_s=20)
        sent = await wait_for(
            lambda: logged_events(platform.pool, platform.names.prefix, "message.sent")
        )
    finally:
        await component.stop()
    assert await ledger_state(platform.pool, "m-wired-1") == "sent"
    assert len(handler.received) == 1
    assert {e.payload.message_id for e in sent} == {"m-wired-1"}  # type: ignore[attr-defined]
    msg = message_from_bytes(handler.received[0][2], policy=policy.default)
    assert msg["Message-ID"] == "<m-wired-1@localhost>"
    assert str(msg["List-Unsubscribe"]).startswith(f"<{platform.settings.public_url}/u/")


async def test_an_objection_consumed_before_the_request_wins(
    platform: Platform,
    smtp_server: tuple[ScriptedSmtpHandler, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, port = smtp_server
    monkeypatch.setenv("RELANCE_SMTP_URL", f"smtp://127.0.0.1:{port}")
    request = birthday_request("m-wired-2")
    objection = new_event(
        ConsentChanged(channel="email", purpose="marketing", status="denied", origin="admin"),
        shop_id="shop",
        contact_key=request.contact_key,
        source="ingest",
        occurred_at=datetime.now(UTC),
    )
    component = build(platform)
    await component.start()
    try:
        await platform.bus.publish([objection])
        await wait_for(
            lambda: platform.pool.fetchval(
                "SELECT status FROM sender_consents WHERE contact_key = $1", request.contact_key
            )
        )
        await platform.bus.publish([request])
        await wait_for(
            lambda: logged_events(platform.pool, platform.names.prefix, "message.failed")
        )
    finally:
        await component.stop()
    assert await ledger_state(platform.pool, "m-wired-2") == "failed"
    assert handler.received == []
    inbox = await platform.pool.fetchval(
        "SELECT count(*) FROM runtime_inbox WHERE consumer = 'sender' AND event_id = $1",
        objection.event_id,
    )
    assert inbox == 1


async def test_without_smtp_emails_land_in_the_outbox_under_the_data_dir(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELANCE_SMTP_URL", raising=False)
    monkeypatch.delenv("RELANCE_SENDER_SMTP_URL", raising=False)
    component = build(platform)
    await component.start()
    try:
        await platform.bus.publish([birthday_request("m-outbox-1", purpose="transactional")])
        await wait_for(lambda: logged_events(platform.pool, platform.names.prefix, "message.sent"))
    finally:
        await component.stop()
    eml = Path(platform.settings.data_dir) / "outbox" / "m-outbox-1.eml"
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["X-Relance-Message-Id"] == "m-outbox-1"
    assert msg["List-Unsubscribe"] is None


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    return base64.b64encode(
        hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()


async def test_inbound_stop_and_start_over_http(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELANCE_SENDER_SMS_PROVIDER", "twilio")
    monkeypatch.setenv("RELANCE_SENDER_SMS_ACCOUNT_SID", "AC1")
    monkeypatch.setenv("RELANCE_SENDER_SMS_AUTH_TOKEN", "tw-secret")
    component = build(platform)
    app = FastAPI()
    install_auth_handler(app)
    for router in component.routers():
        app.include_router(router)
    url = f"{platform.settings.public_url}/v1/sms/inbound/twilio/shop"

    async def post(
        client: httpx.AsyncClient, body: str, signature: str | None = None
    ) -> httpx.Response:
        form = {
            "From": "+33612345678",
            "To": "+33700000000",
            "Body": body,
            "MessageSid": "SM" + body,
        }
        headers = {"X-Twilio-Signature": signature or twilio_signature("tw-secret", url, form)}
        return await client.post("/v1/sms/inbound/twilio/shop", data=form, headers=headers)

    async def suppressed() -> int:
        count: int = await platform.pool.fetchval(
            "SELECT count(*) FROM sender_suppressions WHERE shop_id = 'shop' AND channel = 'sms'"
            " AND address = '+33612345678'"
        )
        return count

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        forged = await post(client, "STOP", signature="bm9wZQ==")
        assert forged.status_code == 403
        assert forged.json()["errors"][0]["field"] == "X-Twilio-Signature"
        assert await suppressed() == 0
        stop = await post(client, "  arrêt ")
        assert stop.status_code == 200 and "<Response>" in stop.text
        assert await suppressed() == 1
        start = await post(client, "START")
        assert start.status_code == 200
        assert await suppressed() == 0
    await component.stop()
