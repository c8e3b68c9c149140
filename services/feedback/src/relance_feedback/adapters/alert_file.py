"""The embedded default: support alerts as JSON lines in a local file, and the sender that
routes each alert to that file or to the webhook, by the target stored with the alert.

Without `RELANCE_SUPPORT_WEBHOOK_URL`, alerts still go through the whole pipeline (stored,
claimed, attempted, recorded as sent) and land in `<data_dir>/outbox/support_alerts.jsonl`,
one object per line: `{"headers": {"webhook-id", "webhook-timestamp", ...}, "alert": {...}}`.
A crash between the write and its record can repeat a line on the next attempt; readers
dedupe by `webhook-id`, as webhook receivers do.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

from relance_feedback.domain.delivery import AttemptOutcome, TransportFailure, Written
from relance_feedback.ports import WebhookSender

ALERT_FILE = Path("outbox") / "support_alerts.jsonl"


def alert_file_under(data_dir: Path) -> Path:
    return (data_dir / ALERT_FILE).resolve()


class FileAlertSender:
    """Appends each alert as one JSON line, flushed to disk before it counts as delivered."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.url = self.path.as_uri()
        self._lock = asyncio.Lock()

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptOutcome:
        kept = {k: v for k, v in headers.items() if k.startswith("webhook-")}
        line = orjson.dumps({"headers": kept, "alert": orjson.loads(body)}) + b"\n"
        # One writer at a time, so concurrent attempts never interleave within a line.
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError:
                return TransportFailure("write")
        return Written()


class RoutedSender:
    """Sends an alert to where it was created for: the local file or the webhook."""

    def __init__(self, file: FileAlertSender, webhook: WebhookSender | None) -> None:
        self._file = file
        self._webhook = webhook

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptOutcome:
        if url == self._file.url:
            return await self._file.send(url, headers, body)
        if self._webhook is None or not url.startswith(("https://", "http://")):
            # Created for a webhook that is no longer configured: retried, then kept failed.
            return TransportFailure("no_endpoint")
        return await self._webhook.send(url, headers, body)
