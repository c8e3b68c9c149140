"""Twilio delivery reports end to end: the create call names our callback (with the message
id), and the signed callback publishes `message.delivered` on the platform's bus."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from relance_runtime.auth import install_auth_handler
from relance_runtime.platform import Platform
from relance_sender.adapters.postgres_ledger import PostgresSenderStore
from relance_sender.adapters.sms_http import TwilioConfig, TwilioSmsTransport, twilio_signature
from relance_sender.bootstrap import build
from relance_sender.domain import ledger
from relance_sender.domain.outcome import Accepted, RetryPolicy
from relance_sender.ports import OutgoingSms

from ...support import eventually as wait_for
from .conftest import TwilioFake, logged_events


async def test_the_create_call_asks_for_reports_about_this_message(twilio: TwilioFake) -> None:
    transport = TwilioSmsTransport(
        TwilioConfig(
            account_sid=twilio.account_sid,
            auth_token=twilio.auth_token,
            sender="MAISON",
            base_url=twilio.base_url,
            status_callback="https://relance.example/v1/sms/status/twilio",
        )
    )
    outcome = await transport.send(OutgoingSms("m-1/ü", "+33612345601", "Maison Dupont: hello"))
    await transport.close()
    assert isinstance(outcome, Accepted)
    callback = twilio.requests[0]["StatusCallback"]
    assert callback == "https://relance.example/v1/sms/status/twilio?m=m-1%2F%C3%BC"


async def test_a_signed_delivery_report_publishes_message_delivered(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELANCE_SENDER_SMS_PROVIDER", "twilio")
    monkeypatch.setenv("RELANCE_SENDER_SMS_ACCOUNT_SID", "AC1")
    monkeypatch.setenv("RELANCE_SENDER_SMS_AUTH_TOKEN", "tw-secret")
    now = datetime.now(UTC)
    async with PostgresSenderStore(platform.pool).transaction() as tx:
        row = ledger.new_row(
            message_id="m-sms-1",
            shop_id="shop",
            contact_key="u-1",
            channel="sms",
            purpose="marketing",
            plan="birthday",
            step="wishes",
            now=now,
        )
        claimed = ledger.claim(row, now=now, owner="test", address="+33612345678")
        await tx.insert(ledger.settle(claimed, Accepted("SM1"), now=now, retry=RetryPolicy()))
    component = build(platform)
    app = FastAPI()
    install_auth_handler(app)
    for router in component.routers():
        app.include_router(router)
    path = "/v1/sms/status/twilio?m=m-sms-1"
    url = f"{platform.settings.public_url}{path}"
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+33612345678"}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://testserver"
    ) as client:
        forged = await client.post(path, data=form, headers={"X-Twilio-Signature": "bm9wZQ=="})
        assert forged.status_code == 403
        signature = twilio_signature("tw-secret", url, form)
        sending = {**form, "MessageStatus": "sending"}
        on_the_way = await client.post(
            path,
            data=sending,
            headers={"X-Twilio-Signature": twilio_signature("tw-secret", url, sending)},
        )
        assert on_the_way.status_code == 204
        delivered = await client.post(path, data=form, headers={"X-Twilio-Signature": signature})
        assert delivered.status_code == 204
    events = await wait_for(
        lambda: logged_events(platform.pool, platform.names.prefix, "message.delivered")
    )
    await component.stop()
    assert [(e.payload.message_id, e.payload.channel) for e in events] == [("m-sms-1", "sms")]  # type: ignore[attr-defined]
