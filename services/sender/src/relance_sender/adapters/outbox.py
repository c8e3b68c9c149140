"""The embedded default: without an SMTP server or an SMS provider, messages land in
`var/outbox/` as `.eml` files and JSON lines, through the same pipeline as real sends."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

from relance_sender.domain.outcome import Accepted, DeliveryOutcome
from relance_sender.email_message import BuiltEmail
from relance_sender.ports import OutgoingSms


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _append_line(path: Path, record: dict[str, object]) -> None:
    with path.open("ab") as handle:
        handle.write(orjson.dumps(record) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def _safe_name(message_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in message_id)


class OutboxEmailTransport:
    """`<dir>/<message id>.eml` (rewritten whole on a resend) and a line in `emails.jsonl`."""

    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def _write(self, email: BuiltEmail) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        name = f"{_safe_name(email.message_id)}.eml"
        _write_atomically(self._dir / name, email.data)
        _append_line(
            self._dir / "emails.jsonl",
            {
                "message_id": email.message_id,
                "message_id_header": email.message_id_header,
                "from": email.envelope_from,
                "to": email.to,
                "subject": email.subject,
                "file": name,
            },
        )

    async def send(self, email: BuiltEmail) -> DeliveryOutcome:
        await asyncio.to_thread(self._write, email)
        return Accepted(provider_message_id=email.message_id, detail="written to outbox")

    async def close(self) -> None:
        return None


class OutboxSmsTransport:
    """One JSON line per SMS in `<dir>/sms.jsonl`."""

    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def _write(self, sms: OutgoingSms) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        _append_line(
            self._dir / "sms.jsonl", {"message_id": sms.message_id, "to": sms.to, "body": sms.body}
        )

    async def send(self, sms: OutgoingSms) -> DeliveryOutcome:
        await asyncio.to_thread(self._write, sms)
        return Accepted(provider_message_id=sms.message_id, detail="written to outbox")

    async def close(self) -> None:
        return None
