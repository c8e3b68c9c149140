"""The two ways to run Relance, as real OS processes: `relance up` (embedded) and
`relance serve SERVICE` (Kafka + external PostgreSQL). Each must become ready and stop
cleanly on SIGTERM (drain, commit, leave the group, exit 0)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

RELANCE = Path(sys.executable).with_name("relance")
pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    port: int, proc: subprocess.Popen[bytes], timeout_s: float = 90
) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early with {proc.returncode}"
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            last = response.text
            if response.status_code == 200:
                body: dict[str, object] = response.json()
                return body
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"not ready after {timeout_s}s: {last}")


def postgres_running(pgdata: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and pgdata.encode() in argv:
            return True
    return False


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def test_relance_up_serves_all_five_services_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
    env["RELANCE_LOG_FORMAT"] = "text"
    proc = subprocess.Popen(
        [str(RELANCE), "up", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = wait_ready(port, proc)
        checks = ready["checks"]
        assert isinstance(checks, dict)
        for group in ("segmentation", "orchestrator", "sender", "feedback"):
            assert checks[f"{group}.consumer:{group}"] is True
        assert (tmp_path / "var" / "pgdata").is_dir()
        docs = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert "/healthz" in docs["paths"]
    finally:
        code = stop(proc)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, output[-3000:]
    assert f"Relance is running on http://127.0.0.1:{port}" in output
    assert "consumer stopped" in output
    pgdata = str(tmp_path / "var" / "pgdata")
    deadline = time.monotonic() + 15
    while postgres_running(pgdata) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not postgres_running(pgdata), "the embedded PostgreSQL outlived `relance up`"


def test_relance_serve_runs_one_service_on_kafka(
    database_url: str, kafka_bootstrap: str, topic_names: object
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
    env.update(
        RELANCE_DATABASE_URL=database_url,
        RELANCE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        RELANCE_TOPIC_PREFIX=topic_names.prefix,  # type: ignore[attr-defined]
        RELANCE_LOG_FORMAT="json",
    )
    proc = subprocess.Popen(
        [str(RELANCE), "serve", "segmentation", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = wait_ready(port, proc)
        assert ready["checks"]["bus"] is True  # type: ignore[index]
        assert ready["checks"]["segmentation.consumer:segmentation"] is True  # type: ignore[index]
    finally:
        code = stop(proc)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, output[-3000:]
    assert '"msg": "consumer stopped"' in output
