from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from relance_sender.adapters.sms_http import (
    JsonSmsConfig,
    JsonSmsTransport,
    TwilioConfig,
    TwilioSmsTransport,
    parse_twilio_inbound,
    twilio_signature,
)
from relance_sender.domain.outcome import Accepted, Ambiguous, Deferred, Rejected
from relance_sender.errors import InvalidWebhook
from relance_sender.ports import OutgoingSms

from .conftest import TwilioFake, free_port


def twilio_transport(fake: TwilioFake, timeout_s: float = 5.0) -> TwilioSmsTransport:
    return TwilioSmsTransport(
        TwilioConfig(
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            sender="MAISON",
            base_url=fake.base_url,
            timeout_s=timeout_s,
        )
    )


def sms(to: str) -> OutgoingSms:
    return OutgoingSms(
        message_id="m-1", to=to, body="Maison Dupont: Joyeux anniversaire ! STOP SMS"
    )


async def test_twilio_create_is_form_encoded_with_basic_auth(twilio: TwilioFake) -> None:
    transport = twilio_transport(twilio)
    outcome = await transport.send(sms("+33612345601"))
    await transport.close()
    assert isinstance(outcome, Accepted) and outcome.provider_message_id
    assert outcome.provider_message_id.startswith("SM")
    assert twilio.requests == [
        {
            "To": "+33612345601",
            "From": "MAISON",
            "Body": "Maison Dupont: Joyeux anniversaire ! STOP SMS",
        }
    ]


async def test_twilio_opted_out_suppresses_and_rate_limit_retries(twilio: TwilioFake) -> None:
    transport = twilio_transport(twilio)
    opted_out = await transport.send(sms("+33612345602"))
    limited = await transport.send(sms("+33612345603"))
    await transport.close()
    assert isinstance(opted_out, Rejected) and opted_out.suppress and opted_out.code == "21610"
    assert isinstance(limited, Deferred) and limited.code == "20429"


async def test_twilio_timeout_is_ambiguous(twilio: TwilioFake) -> None:
    transport = twilio_transport(twilio, timeout_s=0.3)
    outcome = await transport.send(sms("+33612345604"))
    await transport.close()
    assert isinstance(outcome, Ambiguous)


async def test_twilio_wrong_credentials_are_permanent(twilio: TwilioFake) -> None:
    transport = TwilioSmsTransport(
        TwilioConfig(
            account_sid=twilio.account_sid,
            auth_token="wrong",
            sender="MAISON",
            base_url=twilio.base_url,
        )
    )
    outcome = await transport.send(sms("+33612345601"))
    await transport.close()
    assert isinstance(outcome, Rejected) and outcome.code == "20003"


async def test_unreachable_provider_is_retried() -> None:
    transport = TwilioSmsTransport(
        TwilioConfig(
            account_sid="AC1",
            auth_token="t",
            sender="MAISON",
            base_url=f"http://127.0.0.1:{free_port()}",
        )
    )
    outcome = await transport.send(sms("+33612345601"))
    await transport.close()
    assert isinstance(outcome, Deferred) and outcome.code == "connect"


def test_inbound_webhook_signature() -> None:
    url = "https://relance.example/v1/sms/inbound/twilio/shop-1"
    params = {"From": "+33612345678", "To": "+33700000000", "Body": "STOP", "MessageSid": "SM1"}
    signature = twilio_signature("secret-token", url, params)
    inbound = parse_twilio_inbound(
        auth_token="secret-token", url=url, params=params, signature=signature
    )
    assert (inbound.from_number, inbound.body, inbound.provider_message_id) == (
        "+33612345678",
        "STOP",
        "SM1",
    )
    with pytest.raises(InvalidWebhook):
        parse_twilio_inbound(
            auth_token="secret-token",
            url=url,
            params={**params, "Body": "START"},
            signature=signature,
        )
    with pytest.raises(InvalidWebhook):
        parse_twilio_inbound(auth_token="secret-token", url=url, params=params, signature=None)


@pytest.fixture
def json_provider() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({**body, "auth": self.headers.get("Authorization")})
            status, reply = (429, {}) if body["to"].endswith("03") else (202, {"id": "p-1"})
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Retry-After", "120")
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sms", seen
    server.shutdown()
    server.server_close()


async def test_generic_json_provider(json_provider: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = json_provider
    transport = JsonSmsTransport(JsonSmsConfig(url=url, token="tok", sender="MAISON"))
    ok = await transport.send(sms("+33612345601"))
    limited = await transport.send(sms("+33612345603"))
    await transport.close()
    assert isinstance(ok, Accepted) and ok.provider_message_id == "p-1"
    assert isinstance(limited, Deferred) and limited.retry_after_s == 120.0
    assert seen[0]["auth"] == "Bearer tok" and seen[0]["message_id"] == "m-1"
