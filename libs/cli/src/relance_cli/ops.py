"""`relance dlq list|replay`, `relance status` and `relance contact`: the operator's commands
(deploy/README.md)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from relance_runtime.clock import SystemClock
from relance_runtime.errors import RelanceError
from relance_runtime.ops import LetterId, Ops, open_ops
from relance_runtime.settings import CommonSettings

dlq_app = typer.Typer(
    help="Inspect dead letters (relance.dlq.v1) and replay them to their source topic.",
    no_args_is_help=True,
)

T = TypeVar("T")


def _run(action: Callable[[Ops], Awaitable[T]]) -> T:
    """Connect as RELANCE_* says (RELANCE_BUS, RELANCE_DATABASE_URL, ...), run, disconnect."""

    async def main() -> T:
        async with open_ops(CommonSettings()) as ops:
            return await action(ops)

    try:
        return asyncio.run(main())
    except RelanceError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (the newest).")] = 50,
    pending: Annotated[bool, typer.Option(help="Only dead letters not replayed yet.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """List dead letters: id (partition:offset), reason, source, group, event, replay."""
    letters = _run(lambda ops: ops.dead_letters(limit=limit, pending_only=pending))
    if as_json:
        _print_json([letter.as_json() for letter in letters])
        return
    table = Table(
        "id", "dead-lettered at", "group", "source", "event", "reason", "replayed", expand=True
    )
    for letter in letters:
        src = letter.source
        table.add_row(
            str(letter.id),
            letter.dead_lettered_at or "",
            letter.consumer_group,
            f"{src.topic}[{src.partition}]@{src.offset}" if src else "?",
            f"{letter.event_type or '?'} {letter.event_id or ''}".strip(),
            letter.reason,
            f"{letter.replay.state} {letter.replay.at:%Y-%m-%d %H:%M}" if letter.replay else "no",
        )
    Console().print(table)
    Console(stderr=True).print(f"{len(letters)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[
        list[str] | None,
        typer.Option("--id", help="A dead letter id (partition:offset); repeat for several."),
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every dead letter not replayed yet.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Say what would be replayed; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
) -> None:
    """Re-publish dead letters' original bytes and headers to their source topic.

    Consumers' inboxes drop events they already applied; a replayed letter is never
    replayed again, and one poison record dead-lettered by several groups is replayed once.
    """
    if bool(ids) == replay_all:
        raise typer.BadParameter("give either --id (one or more) or --all")
    try:
        wanted = None if replay_all else [LetterId.parse(i) for i in ids or ()]
    except RelanceError as exc:
        raise typer.BadParameter(str(exc)) from exc
    report = _run(lambda ops: ops.replay(wanted, dry_run=dry_run))
    if as_json:
        _print_json(report.as_json())
        return
    out = Console()
    verb = "would publish" if dry_run else "published"
    out.print(f"{verb} {len(report.published)}: {' '.join(str(x.id) for x in report.published)}")
    if report.covered:
        out.print(
            f"covered by the same source record ({len(report.covered)}): "
            + " ".join(str(x.id) for x in report.covered)
        )
    if report.already:
        out.print(
            f"already replayed ({len(report.already)}): "
            + " ".join(str(x.id) for x in report.already)
        )
    for letter, why in report.unreplayable:
        out.print(f"[yellow]cannot replay[/] {letter.id}: {why}")
    for missing in report.missing:
        out.print(f"[yellow]not found[/] {missing}")
    if report.unreplayable or report.missing:
        raise typer.Exit(code=1)


def status(
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
    all_partitions: Annotated[
        bool, typer.Option("--all-partitions", help="Also list partitions without lag.")
    ] = False,
) -> None:
    """Consumer lag per group and partition, timer backlog, ambiguous sends, failed alerts."""
    settings = CommonSettings()
    now = SystemClock(settings.clock_offset_file).now()
    report = _run(lambda ops: ops.status(now))
    if as_json:
        _print_json(report.as_json())
        return
    out = Console()
    if report.lag is None:
        out.print(f"[red]lag unavailable[/] ({report.bus}): {report.lag_error}")
    else:
        totals: dict[str, int] = {}
        for item in report.lag:
            totals[item.group] = totals.get(item.group, 0) + item.lag
        table = Table("group", "topic", "partition", "committed", "end", "lag")
        for item in report.lag:
            if item.lag or all_partitions:
                table.add_row(
                    item.group,
                    item.topic,
                    str(item.partition),
                    "-" if item.committed is None else str(item.committed),
                    str(item.end),
                    str(item.lag),
                )
        out.print(table)
        out.print(
            f"bus {report.bus}; lag per group: "
            + ", ".join(f"{g} {n}" for g, n in sorted(totals.items()))
        )

    def show(value: int | None) -> str:
        return "n/a (table absent)" if value is None else str(value)

    b = report.backlog
    out.print(f"timers due now        {show(b.timers_due)}")
    out.print(f"timers pending        {show(b.timers_pending)}")
    out.print(f"timers parked         {show(b.timers_parked)}")
    out.print(f"ambiguous sends       {show(b.ambiguous_sends)}")
    out.print(f"support alerts failed {show(b.failed_alerts)}")
    out.print(f"support alerts queued {show(b.pending_alerts)}")
    out.print(f"dead letters retained {show(report.dead_letters_retained)}")
    out.print(f"dead letters replayed {show(b.dead_letters_replayed)}")


def contact(
    shop_id: Annotated[str, typer.Argument(help="The shop the contact belongs to.")],
    contact_key: Annotated[
        str, typer.Argument(help="The contact key (user id, or anon:<anonymous id>).")
    ],
) -> None:
    """What the orchestrator holds for one contact, as JSON: its state (facts, plan
    instances and their steps, sends; fields at their default left out), its timers, and
    the row's version. States are stored packed (MessagePack), so this is how to read one.
    Exits with 1 if the orchestrator has never seen the contact."""
    from relance_orchestrator.adapters.postgres_timers import (
        PostgresContactStore,
        PostgresTimerStore,
    )
    from relance_orchestrator.adapters.state_codec import state_as_builtins

    async def read(ops: Ops) -> dict[str, Any] | None:
        async with ops.pool.acquire() as conn:
            stored = await PostgresContactStore().peek(conn, shop_id, contact_key)
            if stored is None:
                return None
            timers = await PostgresTimerStore().of_contact(conn, shop_id, contact_key)
        return {
            "shop_id": shop_id,
            "contact_key": contact_key,
            "version": stored.version,
            "updated_at": stored.updated_at.isoformat(),
            "timers": [
                {k: v.isoformat() if isinstance(v, datetime) else v for k, v in t.items()}
                for t in timers
            ],
            "state": state_as_builtins(stored.state),
        }

    found = _run(read)
    if found is None:
        Console(stderr=True).print(f"no contact {contact_key!r} in shop {shop_id!r}")
        raise typer.Exit(code=1)
    _print_json(found)
