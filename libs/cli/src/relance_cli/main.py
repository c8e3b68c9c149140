"""`relance`: run, operate and analyse Relance from one command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from relance_cli.services import APP_HOOKS, FACTORIES
from relance_runtime.host import ServiceComponent, create_host_app
from relance_runtime.platform import Platform
from relance_runtime.settings import CommonSettings
from relance_runtime.telemetry import configure_logging, configure_tracing

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

console = Console(stderr=True)


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
    label = "+".join(n.value for n in names)
    configure_logging(common.log_level, common.log_format, service=label)
    configure_tracing(f"relance-{label}", common.otel_exporter, common.otel_endpoint)

    def on_ready(platform: Platform, components: Sequence[ServiceComponent]) -> None:
        if not banner:
            return
        console.print(f"[bold green]Relance is running[/] on http://{host}:{port}")
        console.print(f"  API docs        http://{host}:{port}/docs")
        console.print(f"  health          http://{host}:{port}/readyz")
        console.print(f"  services        {', '.join(c.name for c in components)}")
        console.print(f"  bus             {common.bus}")
        console.print(f"  database        {platform.dsn}")
        console.print(f"  data            {common.data_dir.resolve()}")
        console.print(f"  outbox          {(common.data_dir / 'outbox').resolve()}")

    fastapi_app = create_host_app(
        common,
        {n.value: FACTORIES[n.value] for n in names},
        title=f"Relance ({label})",
        on_ready=on_ready,
        app_hooks=[APP_HOOKS[n.value] for n in names],
    )
    config = uvicorn.Config(
        fastapi_app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(common.drain_timeout_s) + 5,
    )
    server = uvicorn.Server(config)
    server.run()  # uvicorn turns SIGTERM/SIGINT into a graceful lifespan shutdown
    if not server.started:
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
    common = CommonSettings()
    if "RELANCE_BUS" not in os.environ:
        common = common.model_copy(update={"bus": "kafka"})
    _serve(common, [service], host, port, banner=False)


@app.command()
def migrate() -> None:
    """Apply pending database migrations and exit (services also do it on start)."""
    from relance_runtime.db import migrate as run_migrations
    from relance_runtime.platform import resolve_dsn

    common = CommonSettings()

    async def run() -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(resolve_dsn(common))
        try:
            return await run_migrations(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    console.print(
        f"{len(applied)} migration(s) applied" + (": " + ", ".join(applied) if applied else "")
    )


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
