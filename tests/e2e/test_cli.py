"""The `relance` commands as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RELANCE = str(Path(sys.executable).with_name("relance"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELANCE, *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_simulate_is_deterministic_and_sends_the_welcome_pack(tmp_path: Path) -> None:
    lines = [
        {
            "type": "identify",
            "userId": "u1",
            "messageId": "i1",
            "timestamp": "2011-01-02T09:00:00Z",
            "traits": {"email": "ada@example.com", "first_name": "Ada", "email_consent": "granted"},
        },
        {
            "type": "track",
            "userId": "u1",
            "messageId": "o1",
            "event": "Order Completed",
            "timestamp": "2011-01-03T10:00:00Z",
            "properties": {"order_id": "A1", "total": 120.0, "currency": "GBP"},
        },
        {
            "type": "track",
            "userId": "u2",
            "messageId": "o2",
            "event": "Order Completed",
            "timestamp": "2011-01-04T10:00:00Z",
            "properties": {"order_id": "B1", "total": 20.0, "currency": "GBP"},
        },
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        result = run(
            "simulate",
            "--events",
            str(events),
            "--until",
            "2011-03-01T00:00:00Z",
            "--out",
            name,
            "--no-progress",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1], "the backtest is not deterministic"
    sends = [json.loads(line) for line in outputs[0].decode().splitlines()]
    welcome = [s for s in sends if (s["plan"], s["step"]) == ("welcome_pack", "welcome")]
    assert {s["user_id"] for s in welcome} == {"u1", "u2"}
    for send in sends:
        assert {"user_id", "plan", "step", "variant", "channel", "at", "message_id"} <= set(send)
    assert "welcome_pack" in result.stdout + result.stderr


def test_simulate_refuses_a_bad_date(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("")
    result = run(
        "simulate", "--events", "e.jsonl", "--until", "next tuesday", "--out", "o", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "ISO 8601" in result.stderr


def test_config_lists_every_variable_and_help_explains(tmp_path: Path) -> None:
    result = run("config", "--markdown", cwd=tmp_path)
    assert result.returncode == 0
    assert "`RELANCE_DATABASE_URL`" in result.stdout
    help_text = run("--help", cwd=tmp_path).stdout
    for command in ("up", "serve", "simulate", "dlq", "status", "infra"):
        assert command in help_text


def test_import_orders_loads_a_real_slice_once(
    tmp_path: Path, database_url: str, online_retail_file: Path
) -> None:
    import gzip
    import os

    with gzip.open(online_retail_file, "rt", encoding="utf-8", newline="") as full:
        head = [next(full) for _ in range(3000)]
    sample = tmp_path / "slice.csv"
    sample.write_text("".join(head))
    env = {**os.environ, "RELANCE_DATABASE_URL": database_url, "COLUMNS": "200"}

    def load() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                RELANCE,
                "import",
                "orders",
                "--format",
                "online-retail",
                str(sample),
                "--no-progress",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    import csv
    import re

    rows = list(csv.DictReader(head))
    with_customer = [r for r in rows if r["CustomerID"].strip()]
    orders = {r["InvoiceNo"] for r in with_customer if not r["InvoiceNo"].startswith("C")}
    refunds = {r["InvoiceNo"] for r in with_customer if r["InvoiceNo"].startswith("C")}

    first, second = load(), load()
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    report = re.sub(r"[│┃]", "|", first.stdout + first.stderr)
    assert re.search(
        rf"lines skipped \(no customer\)\s*\|\s*{len(rows) - len(with_customer):,}", report
    )
    assert re.search(rf"orders loaded / already known\s*\|\s*{len(orders)} / 0", report)
    assert re.search(rf"refunds loaded / already known\s*\|\s*{len(refunds)} / 0", report)
    again = re.sub(r"[│┃]", "|", second.stdout + second.stderr)
    assert re.search(rf"orders loaded / already known\s*\|\s*0 / {len(orders)}", again)
