"""`relance serve ingest` with RELANCE_INGEST_WORKERS=2: worker processes share the port,
each drains on SIGTERM (the command exits 0), and none outlives the supervisor."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from relance_runtime.bus.messages import TopicNames

RELANCE = Path(sys.executable).with_name("relance")
AUTH = {"Authorization": "Basic " + base64.b64encode(b"wk-workers:").decode()}
pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(
    database_url: str, kafka_bootstrap: str, names: TopicNames, port: int
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
    env.update(
        RELANCE_DATABASE_URL=database_url,
        RELANCE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        RELANCE_TOPIC_PREFIX=names.prefix,
        RELANCE_WRITE_KEYS="shop:wk-workers",
        RELANCE_INGEST_WORKERS="2",
        RELANCE_LOG_FORMAT="json",
    )
    return subprocess.Popen(
        [str(RELANCE), "serve", "ingest", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_workers(proc: subprocess.Popen[bytes], port: int) -> set[int]:
    """Both workers answer /readyz (each has its own platform); returns their pids."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early with {proc.returncode}"
        workers = children(proc.pid)
        if len(workers) == 2:
            try:
                # New connections land on either worker; enough of them reach both.
                codes = {
                    httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
                    for _ in range(8)
                }
                if codes == {200}:
                    return workers
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    raise AssertionError("the workers did not become ready")


def event(i: int) -> dict[str, object]:
    return {
        "messageId": f"w-{uuid.uuid4()}",
        "userId": f"u{i}",
        "event": "Signed Up",
        "properties": {},
        "timestamp": datetime.now(UTC).isoformat(),
    }


def log_lines(proc: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    out = proc.stdout.read().decode() if proc.stdout else ""
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_two_workers_serve_one_port_and_each_drains_on_sigterm(
    database_url: str, kafka_bootstrap: str, topic_names: TopicNames
) -> None:
    port = free_port()
    proc = start(database_url, kafka_bootstrap, topic_names, port)
    try:
        workers = wait_workers(proc, port)
        for i in range(20):
            with httpx.Client(timeout=10) as client:  # a new connection each time
                response = client.post(
                    f"http://127.0.0.1:{port}/v1/track", json=event(i), headers=AUTH
                )
            assert (response.status_code, response.json()) == (200, {"success": True})
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    lines = log_lines(proc)
    assert code == 0, lines[-20:]
    assert not any(alive(pid) for pid in workers)
    finished = {
        line.get("msg") for line in lines if "Finished server process" in str(line.get("msg"))
    }
    assert len(finished) == 2, lines[-20:]  # uvicorn's last word, once per worker


def test_a_worker_that_dies_stops_the_others_and_a_killed_supervisor_leaves_none(
    database_url: str, kafka_bootstrap: str, topic_names: TopicNames
) -> None:
    port = free_port()
    proc = start(database_url, kafka_bootstrap, topic_names, port)
    try:
        first, second = sorted(wait_workers(proc, port))
        os.kill(first, signal.SIGKILL)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code != 0  # a supervisor above (systemd, Kubernetes) restarts the whole
    assert not alive(second)

    again = start(database_url, kafka_bootstrap, topic_names, port)
    try:
        workers = wait_workers(again, port)
        again.kill()  # SIGKILL: no chance to pass anything on
        again.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers)
    finally:
        if again.poll() is None:
            again.kill()
