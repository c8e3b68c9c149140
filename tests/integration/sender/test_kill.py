"""Kill tests: the sender as a real process (`relance serve sender`), SIGKILLed by its
`RELANCE_SENDER_FAILPOINT` test hook at one point of a send, then restarted without it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from relance_runtime.bus.messages import TopicNames
from relance_runtime.platform import Platform

from ...support import eventually as wait_for
from .conftest import (
    ScriptedSmtpHandler,
    birthday_request,
    free_port,
    ledger_state,
    logged_events,
)

RELANCE = Path(sys.executable).with_name("relance")


class SenderProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, failpoint: str | None = None) -> subprocess.Popen[bytes]:
        env = dict(self._env)
        if failpoint:
            env["RELANCE_SENDER_FAILPOINT"] = failpoint
        port = str(free_port())
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(RELANCE), "serve", "sender", "--host", "127.0.0.1", "--port", port],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.proc

    def wait_killed(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sender_process(
    database_url: str,
    topic_names: TopicNames,
    smtp_server: tuple[ScriptedSmtpHandler, int],
    tmp_path: Path,
) -> Iterator[SenderProcess]:
    _, port = smtp_server
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELANCE_")}
    env.update(
        RELANCE_BUS="postgres",
        RELANCE_DATABASE_URL=database_url,
        RELANCE_TOPIC_PREFIX=topic_names.prefix,
        RELANCE_SMTP_URL=f"smtp://127.0.0.1:{port}",
        RELANCE_DATA_DIR=str(tmp_path / "var"),
        RELANCE_LOG_FORMAT="text",
        RELANCE_SENDER_INSTANCE="kill-test-host",
        RELANCE_SENDER_DUE_POLL_S="0.3",
    )
    process = SenderProcess(env, tmp_path / "sender.log")
    try:
        yield process
    finally:
        process.stop()


def _message_ids(handler: ScriptedSmtpHandler) -> list[str]:
    return [
        str(message_from_bytes(data, policy=policy.default)["Message-ID"])
        for _, _, data in handler.received
    ]


async def _killed_at(
    failpoint: str, process: SenderProcess, platform: Platform, message_id: str, purpose: str
) -> None:
    process.start(failpoint)
    await platform.bus.publish([birthday_request(message_id, purpose=purpose)])
    assert process.wait_killed() == -signal.SIGKILL


async def test_killed_after_the_ledger_commit_sends_exactly_one_email(
    platform: Platform,
    sender_process: SenderProcess,
    smtp_server: tuple[ScriptedSmtpHandler, int],
) -> None:
    handler, _ = smtp_server
    await _killed_at("after_ledger_commit", sender_process, platform, "m-kill-1", "marketing")
    assert await ledger_state(platform.pool, "m-kill-1") == "sent"
    assert await logged_events(platform.pool, platform.names.prefix, "message.sent") == []

    sender_process.start()
    # The offset was never committed: the request comes back, finds `sent`, and only
    # publishes the status event the dead process could not.
    sent = await wait_for(
        lambda: logged_events(platform.pool, platform.names.prefix, "message.sent"),
        timeout_s=60,
    )
    assert [e.payload.message_id for e in sent] == ["m-kill-1"]  # type: ignore[attr-defined]
    assert _message_ids(handler) == ["<m-kill-1@localhost>"]


async def test_killed_after_the_250_leaves_a_marketing_email_ambiguous(
    platform: Platform,
    sender_process: SenderProcess,
    smtp_server: tuple[ScriptedSmtpHandler, int],
) -> None:
    handler, _ = smtp_server
    await _killed_at("after_smtp_250", sender_process, platform, "m-kill-2", "marketing")
    assert await ledger_state(platform.pool, "m-kill-2") == "sending"
    assert len(handler.received) == 1

    sender_process.start()

    async def ambiguous() -> bool:
        return await ledger_state(platform.pool, "m-kill-2") == "ambiguous"

    await wait_for(ambiguous, timeout_s=60)

    async def request_consumed_again() -> bool:
        committed = await platform.pool.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM bus_group_offsets WHERE group_id = $1",
            platform.names.group("sender"),
        )
        return bool(committed)

    await wait_for(request_consumed_again, timeout_s=60)
    assert await ledger_state(platform.pool, "m-kill-2") == "ambiguous"
    assert _message_ids(handler) == ["<m-kill-2@localhost>"]


async def test_killed_after_the_250_resends_a_transactional_email_with_the_same_id(
    platform: Platform,
    sender_process: SenderProcess,
    smtp_server: tuple[ScriptedSmtpHandler, int],
) -> None:
    handler, _ = smtp_server
    await _killed_at("after_smtp_250", sender_process, platform, "m-kill-3", "transactional")
    assert await ledger_state(platform.pool, "m-kill-3") == "sending"

    sender_process.start()

    async def sent() -> bool:
        return await ledger_state(platform.pool, "m-kill-3") == "sent"

    await wait_for(sent, timeout_s=60)
    assert _message_ids(handler) == ["<m-kill-3@localhost>", "<m-kill-3@localhost>"]
