"""The local alert file and the routing sender, on real files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from relance_feedback.adapters.alert_file import FileAlertSender, RoutedSender, alert_file_under
from relance_feedback.domain.delivery import TransportFailure, Written


def headers(n: int) -> dict[str, str]:
    return {"webhook-id": f"msg_{n}", "webhook-timestamp": "1700000000", "content-type": "x"}


async def test_concurrent_alerts_are_whole_lines(tmp_path: Path) -> None:
    sender = FileAlertSender(alert_file_under(tmp_path))
    body = json.dumps({"data": {"comment": "é" * 5000}}).encode()
    outcomes = await asyncio.gather(*(sender.send(sender.url, headers(n), body) for n in range(20)))
    assert outcomes == [Written()] * 20
    lines = (tmp_path / "outbox" / "support_alerts.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["headers"]["webhook-id"] for line in lines) == sorted(
        f"msg_{n}" for n in range(20)
    )
    assert all(json.loads(line)["alert"]["data"]["comment"] == "é" * 5000 for line in lines)
    assert "content-type" not in json.loads(lines[0])["headers"]


async def test_a_failed_write_is_a_retryable_failure(tmp_path: Path) -> None:
    (tmp_path / "outbox").write_text("a file where the directory should be")
    sender = FileAlertSender(alert_file_under(tmp_path))
    assert await sender.send(sender.url, headers(1), b"{}") == TransportFailure("write")


async def test_routing_by_the_alert_target(tmp_path: Path) -> None:
    file = FileAlertSender(tmp_path / "alerts.jsonl")
    routed = RoutedSender(file, None)
    assert await routed.send(file.url, headers(1), b"{}") == Written()
    # An alert created for a webhook that is no longer configured, or for another file.
    assert await routed.send("https://support.example/hook", headers(2), b"{}") == (
        TransportFailure("no_endpoint")
    )
    other = (tmp_path / "elsewhere.jsonl").as_uri()
    assert await routed.send(other, headers(3), b"{}") == TransportFailure("no_endpoint")
    assert not (tmp_path / "elsewhere.jsonl").exists()
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1
