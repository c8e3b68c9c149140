"""`relance`: run, operate and analyse Relance from one command."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from relance_cli.ops import contact, dlq_app, status
from relance_cli.services import APP_HOOKS, FACTORIES
from relance_runtime.host import ServiceComponent
from relance_runtime.platform import Platform
from relance_runtime.serve import run, standalone_settings
from relance_runtime.settings import CommonSettings

app = typer.Typer(
    name="relance",
    help=(
        "Relance, a self-hosted retention engine for e-commerce.\n\n"
        "`relance up` runs everything in one process (embedded PostgreSQL, no Kafka needed); "
        "`relance serve SERVICE` runs one service against Kafka and an external PostgreSQL, "
        "which is how each service is scaled on its own. Configuration comes from RELANCE_* "
        "environment variables (see the README)."
    ),
    no_args_is_help=True,
    add_completion=False,
)
infra_app = typer.Typer(help="Start and stop the local Apache Kafka broker (KRaft, 127.0.0.1).")
app.add_typer(infra_app, name="infra")
import_app = typer.Typer(help="Load historical data into Relance's database.")
app.add_typer(import_app, name="import")
app.add_typer(dlq_app, name="dlq")
app.command()(status)
app.command()(contact)

console = Console(stderr=True, soft_wrap=True)


class Service(StrEnum):
    ingest = "ingest"
    segmentation = "segmentation"
    orchestrator = "orchestrator"
    sender = "sender"
    feedback = "feedback"


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "deploy" / "kafka" / "kafka.sh").exists():
            return parent
    return Path.cwd()


def _serve(
    common: CommonSettings,
    names: Sequence[Service],
    host: str,
    port: int,
    *,
    banner: bool,
) -> None:
    async def on_ready(platform: Platform, components: Sequence[ServiceComponent]) -> None:
        if not banner:
            return
        from relance_ingest.devkeys import ensure_dev_keys_file

        dev_keys = await ensure_dev_keys_file(platform, common.data_dir)
        console.print(f"[bold green]Relance is running[/] on http://{host}:{port}")
        console.print(f"  API docs        http://{host}:{port}/docs")
        console.print(f"  health          http://{host}:{port}/readyz")
        console.print(f"  services        {', '.join(c.name for c in components)}")
        console.print(f"  bus             {common.bus}")
        console.print(f"  database        {platform.dsn}")
        console.print(f"  data            {common.data_dir.resolve()}")
        console.print(f"  outbox          {(common.data_dir / 'outbox').resolve()}")
        if dev_keys:
            console.print(
                f"  dev keys        write {dev_keys['write']}  admin {dev_keys['admin']}"
                f"  (kept in {(common.data_dir / 'dev-keys.txt').resolve()})"
            )

    started = run(
        common,
        {n.value: FACTORIES[n.value] for n in names},
        host=host,
        port=port,
        app_hooks=[APP_HOOKS[n.value] for n in names],
        on_ready=on_ready,
    )
    if not started:
        raise typer.Exit(code=1)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the one HTTP server.")] = 8000,
) -> None:
    """Run all five services in one process on one port (the embedded default).

    PostgreSQL comes from pgserver under var/ unless RELANCE_DATABASE_URL is set, and the
    bus is the durable PostgreSQL log unless RELANCE_BUS=kafka. Emails are written as .eml
    files and SMS / support alerts as JSON lines under var/outbox/ until SMTP, SMS providers
    and webhooks are configured.
    """
    _serve(CommonSettings(), list(Service), host, port, banner=True)


@app.command()
def serve(
    service: Annotated[Service, typer.Argument(help="Which service this process runs.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "0.0.0.0",
    port: Annotated[
        int, typer.Option(help="HTTP port (health, metrics, the service's API).")
    ] = 8000,
) -> None:
    """Run one service against Kafka and PostgreSQL; start as many as you need.

    Instances of the same service share its consumer group, so partitions split between
    them. The bus defaults to Kafka here (RELANCE_KAFKA_BOOTSTRAP) and the database should
    be external (RELANCE_DATABASE_URL).
    """
    _serve(standalone_settings(), [service], host, port, banner=False)


@app.command()
def migrate() -> None:
    """Apply pending database migrations and exit (services also do it on start)."""
    from relance_runtime.db import migrate as run_migrations
    from relance_runtime.platform import resolve_dsn

    common = CommonSettings()

    async def apply() -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(resolve_dsn(common))
        try:
            return await run_migrations(conn)
        finally:
            await conn.close()

    applied = asyncio.run(apply())
    console.print(
        f"{len(applied)} migration(s) applied" + (": " + ", ".join(applied) if applied else "")
    )


def _config_markdown() -> str:
    from relance_runtime.catalog import variables

    lines = ["| variable | service | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{v.name}` | {v.scope} | `{v.default}` | {v.description} |" for v in variables()]
    return "\n".join(lines) + "\n"


@app.command()
def config(
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table.")] = False,
    update_readme: Annotated[
        Path | None, typer.Option(help="Rewrite the configuration section of this README.")
    ] = None,
) -> None:
    """List every RELANCE_* environment variable, what it does and its default."""
    if update_readme is not None:
        import re

        text = update_readme.read_text()
        table = _config_markdown()
        updated = re.sub(
            r"(<!-- config:start -->\n).*?(<!-- config:end -->)",
            lambda m: m.group(1) + table + m.group(2),
            text,
            flags=re.S,
        )
        update_readme.write_text(updated)
        return
    if markdown:
        sys.stdout.write(_config_markdown())
        return
    from rich.table import Table

    from relance_runtime.catalog import variables

    listing = Table("variable", "service", "default", "meaning")
    for v in variables():
        listing.add_row(v.name, v.scope, v.default, v.description)
    Console().print(listing)


def _iso8601(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not ISO 8601", param_hint=option) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("simulate")
def simulate_command(
    events: Annotated[
        Path, typer.Option("--events", help="Segment-format JSON lines (identify/track/alias).")
    ],
    until: Annotated[
        str, typer.Option(help="Run the virtual clock up to this ISO 8601 time (UTC if no zone).")
    ],
    out: Annotated[Path, typer.Option(help="One JSON line per message that would be sent.")],
    config: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON overriding plans, shop facts, caps, send windows."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Backtest: run the real plans on a virtual clock over historical events.

    Writes user_id, plan, step, variant, channel, at and message_id per message, and prints
    messages, contacts, attributed orders and revenue per plan. Same input, same bytes out.
    """
    from relance_orchestrator.cli import simulate

    simulate(events, _iso8601(until, "--until"), out, config, progress)


class OrderFormat(StrEnum):
    online_retail = "online-retail"


@import_app.command("orders")
def import_orders_command(
    file: Annotated[Path, typer.Argument(help="The orders file (.csv or .csv.gz).")],
    fmt: Annotated[
        OrderFormat, typer.Option("--format", help="Layout of the file (UCI Online Retail).")
    ] = OrderFormat.online_retail,
    shop: Annotated[str, typer.Option(help="The shop the orders belong to.")] = "default",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Load orders and refunds: each invoice is an order of its customer, invoices starting
    with C are refunds, lines without a customer are skipped and counted. Then RFM, stages and
    tiers are recomputed. Importing the same file again loads nothing new."""
    from relance_segmentation.cli import import_orders

    import_orders(file, fmt.value, shop, progress)


@app.command("rfm")
def rfm_command(
    orders: Annotated[Path, typer.Option(help="The orders file (.csv or .csv.gz).")],
    out: Annotated[Path, typer.Option(help="Where to write one row per customer.")] = Path(
        "rfm.csv"
    ),
    fmt: Annotated[
        OrderFormat, typer.Option("--format", help="Layout of the file (UCI Online Retail).")
    ] = OrderFormat.online_retail,
    as_of: Annotated[
        str | None,
        typer.Option(help="ISO 8601 'now' of the scores (default: last invoice + 1 day)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """RFM straight from an orders file, with no database: writes
    customer_id,recency_days,frequency,monetary,r,f,m,segment (the service's exact method)."""
    from relance_segmentation.cli import rfm

    rfm(orders, fmt.value, _iso8601(as_of, "--as-of") if as_of else None, out, progress)


def _kafka(action: str) -> None:
    script = _repo_root() / "deploy" / "kafka" / "kafka.sh"
    result = subprocess.run(["bash", str(script), action], check=False)
    if result.returncode != 0:
        raise typer.Exit(code=result.returncode)


@infra_app.command("up")
def infra_up() -> None:
    """Fetch Kafka from Maven Central (cached) and start a single-node broker."""
    _kafka("up")


@infra_app.command("down")
def infra_down() -> None:
    """Stop the local broker."""
    _kafka("down")


@infra_app.command("status")
def infra_status() -> None:
    """Exit 0 when the local broker answers."""
    _kafka("status")


def main() -> None:
    sys.exit(app())
