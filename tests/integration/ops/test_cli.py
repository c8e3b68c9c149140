"""The operator commands as a process: configured by RELANCE_* only, JSON on stdout."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from relance_events.topics import EVENTS
from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.ports import OutgoingMessage
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.outbox import TableOutbox

from ..orchestrator.support import handle, order_event, postgres_orchestrator
from .test_dlq import dead_letter

pytestmark = pytest.mark.timeout(180)

DLQ = "from relance_cli.ops import dlq_app; dlq_app()"
RUNTIME = "from relance_runtime.ops.__main__ import main; raise SystemExit(main())"
STATUS = "import typer; from relance_cli.ops import status; typer.run(status)"


async def cli(program: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        program,
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cli_json(program: str, *args: str, env: dict[str, str]) -> Any:
    code, out, err = await cli(program, *args, env=env)
    assert code == 0, err
    return json.loads(out)


async def test_list_replay_and_status_from_the_command_line(
    pg_bus: PostgresLogBus, database_url: str
) -> None:
    env = {
        "RELANCE_BUS": "postgres",
        "RELANCE_DATABASE_URL": database_url,
        "RELANCE_TOPIC_PREFIX": pg_bus.names.prefix,
        "RELANCE_LOG_LEVEL": "WARNING",
    }
    topic = pg_bus.names.of(EVENTS)
    await pg_bus.publish_raw([OutgoingMessage(topic=topic, key=b"shop\x1fc", value=b"{{oops")])
    await dead_letter(pg_bus, "sender-consent", set(), expected=1)

    listed = await cli_json(DLQ, "list", "--json", env=env)
    assert len(listed) == 1
    letter = listed[0]
    assert letter["consumer_group"] == "sender-consent"
    assert letter["source_topic"] == topic
    assert letter["reason"].startswith("undecodable") and letter["replay"] is None

    dry = await cli_json(DLQ, "replay", "--id", letter["id"], "--dry-run", "--json", env=env)
    assert dry["dry_run"] is True and dry["published"] == [letter["id"]]
    assert (await cli_json(DLQ, "list", "--pending", "--json", env=env))[0]["id"] == letter["id"]

    done = await cli_json(DLQ, "replay", "--all", "--json", env=env)
    assert done["published"] == [letter["id"]]
    again = await cli_json(DLQ, "replay", "--all", "--json", env=env)
    assert again["published"] == [] and again["already_replayed"] == [letter["id"]]
    assert (await cli_json(DLQ, "list", "--json", env=env))[0]["replay"] == "published"

    code, _, err = await cli(DLQ, "replay", "--id", "nonsense", env=env)
    assert code != 0 and "partition:offset" in err
    code, out, _ = await cli(DLQ, "replay", "--id", "2:999", env=env)
    assert code == 1 and "not found" in out

    # The same from any service image, which ships the runtime but not the CLI.
    plain = await cli_json(RUNTIME, "dlq", "list", "--pending", env=env)
    assert plain == []

    code, table, _ = await cli(DLQ, "list", env=env)
    assert code == 0 and letter["id"] in table and "published" in table
    code, text, _ = await cli(STATUS, env=env)
    assert code == 0 and "ambiguous sends" in text and pg_bus.names.group("sender-consent") in text

    status = await cli_json(STATUS, "--json", env=env)
    assert status["bus"] == "postgres" and status["lag_error"] is None
    sender_lag = [x for x in status["lag"] if x["group"] == pg_bus.names.group("sender-consent")]
    # The replayed copy waits for the sender's consent group (its loop stopped before).
    assert sum(x["lag"] for x in sender_lag if x["topic"] == topic) == 1
    assert status["backlog"]["dead_letters_replayed"] == 1
    assert status["dead_letters_retained"] == 1


CONTACT = "import typer; from relance_cli.ops import contact; typer.run(contact)"


async def test_contact_prints_a_contacts_state_and_timers(database_url: str) -> None:
    """States are stored packed: `relance contact` is how an operator reads one."""
    orchestrator = postgres_orchestrator(
        TableOutbox(lambda event: to_message(event, TopicNames("cli-")))
    )
    ordered = datetime(2026, 3, 2, 9, tzinfo=UTC)
    await handle(
        database_url, orchestrator, order_event("ann", "o1", ordered, Decimal(80)), ordered
    )
    env = {"RELANCE_BUS": "postgres", "RELANCE_DATABASE_URL": database_url}

    shown = await cli_json(CONTACT, "shop", "ann", env=env)
    assert shown["version"] == 1 and shown["contact_key"] == "ann"  # created, then decided
    assert shown["state"]["facts"]["order_ids"] == ["o1"]
    assert shown["state"]["facts"]["last_order"]["total"] == "80"
    instances = shown["state"]["plans"]["satisfaction_survey"]["instances"]
    assert instances["order:o1"]["steps"]["survey"]["status"] == "scheduled"
    timers = {t["timer_key"]: t for t in shown["timers"]}
    assert timers["satisfaction_survey/order:o1"]["state"] == "pending"
    assert timers["satisfaction_survey/order:o1"]["due_at"].startswith("2026-03-09T09:00:00")

    code, _, err = await cli(CONTACT, "shop", "nobody", env=env)
    assert code == 1 and "no contact 'nobody'" in err
