"""The SSRF guard at connect time, against a real receiver on loopback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from relance_feedback.adapters.webhook_http import HttpWebhookSender, webhook_client
from relance_feedback.domain.addresses import Allowlist
from relance_feedback.domain.delivery import HttpReply, TransportFailure
from relance_feedback.errors import DestinationRefused


def targets(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/",
        f"http://localhost:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f000001:{port}/",
        f"http://127.1:{port}/",
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
    ]


async def test_every_non_public_target_is_refused_without_a_connection(receiver: Any) -> None:
    async with webhook_client(Allowlist(), timeout_s=2.0) as client:
        for url in targets(receiver.port):
            with pytest.raises(DestinationRefused) as refused:
                await client.post(url, content=b"{}")
            assert refused.value.reason, url
    assert receiver.received == []


async def test_the_sender_reports_a_refusal_as_a_failed_attempt(receiver: Any) -> None:
    async with webhook_client(Allowlist(), timeout_s=2.0) as client:
        outcome = await HttpWebhookSender(client).send(receiver.url, {}, b"{}")
    assert outcome == TransportFailure("refused_destination")
    assert receiver.received == []


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "2130706433"),
        ("127.0.0.0/8", "0x7f000001"),
        ("localhost", "localhost"),
        ("127.0.0.0/8 ::1", "localhost"),
    ],
)
async def test_allow_listed_targets_are_reached(receiver: Any, allow: str, host: str) -> None:
    async with webhook_client(Allowlist.parse(allow), timeout_s=2.0) as client:
        response = await client.post(f"http://{host}:{receiver.port}/hooks", content=b"{}")
    assert response.status_code == 200
    assert len(receiver.received) == 1
    assert receiver.received[0].headers["host"] == f"{host}:{receiver.port}"


async def test_allow_listing_one_address_does_not_open_the_others(receiver: Any) -> None:
    async with webhook_client(Allowlist.parse("127.0.0.2"), timeout_s=2.0) as client:
        with pytest.raises(DestinationRefused):
            await client.post(f"http://127.0.0.1:{receiver.port}/", content=b"{}")
        with pytest.raises(DestinationRefused):
            await client.post("http://169.254.169.254/", content=b"{}")


async def test_redirects_are_not_followed_and_the_body_is_not_exposed(receiver: Any) -> None:
    receiver.script = [(307, {"location": f"http://127.0.0.1:{receiver.port}/elsewhere"})]
    async with webhook_client(Allowlist.parse("127.0.0.1"), timeout_s=2.0) as client:
        outcome = await HttpWebhookSender(client).send(receiver.url, {}, b"{}")
    assert outcome == HttpReply(307, None)
    assert "secret internal detail" not in repr(outcome)
    assert [r.path for r in receiver.received] == ["/hooks/support"]


async def test_unresolvable_hosts_are_connect_failures() -> None:
    async with webhook_client(Allowlist(), timeout_s=2.0) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("http://does-not-exist.invalid/", content=b"{}")
