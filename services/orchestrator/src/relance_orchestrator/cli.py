"""`relance simulate`: the real plans over historical Segment events on a virtual clock.

    relance simulate --events FILE.jsonl --until 2012-01-01T00:00:00Z [--config F] --out sends.jsonl

`--config` (YAML or JSON) overrides settings and plan delays, e.g.::

    shop: {timezone: Europe/London, average_basket: 350}   # default: the input's mean order
    attribution_window_days: 5
    # marketing pressure: the RELANCE_ORCHESTRATOR_ settings' keys and defaults
    email_cap_max_messages: 3             # per contact in any rolling window
    email_cap_window_days: 7
    sms_cap_max_messages: 2
    sms_cap_window_days: 7
    email_send_window: mon-fri 08:00-21:00   # default: any time
    sms_send_window: mon-sat 10:00-19:00
    plans_dir: ./my-plans                 # YAML plans replacing/adding bundled ones
    examples: [replenishment]             # bundled example plans to add
    plans:
      welcome_pack:
        send_hour: 10
        steps: {second_purchase: {delay: {days: 5}}}
      birthday: {enabled: false}

Same input and config -> byte-identical `--out`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from relance_orchestrator.domain.engine import Engine
from relance_orchestrator.domain.errors import PlanDefinitionError
from relance_orchestrator.domain.facts import ShopFacts
from relance_orchestrator.domain.plan import Plan
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.settings import PolicySettings
from relance_orchestrator.simulate import PlanSummary, simulate_segment_file, summarize


class ShopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shop_id: str = "shop"
    timezone: str = "UTC"
    average_basket: Decimal | None = None


class SimulationConfig(PolicySettings):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shop: ShopConfig = Field(default_factory=ShopConfig)
    plans_dir: Path | None = None
    examples: tuple[str, ...] = ()
    plans: dict[str, dict[str, Any]] = Field(default_factory=dict)


def read_config(path: Path | None) -> SimulationConfig:
    if path is None:
        return SimulationConfig()
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        config = SimulationConfig.model_validate(raw or {})
    except (ValueError, yaml.YAMLError, ValidationError) as exc:
        raise PlanDefinitionError(f"{path}: {exc}") from exc
    if config.plans_dir is not None and not config.plans_dir.is_absolute():
        config = config.model_copy(update={"plans_dir": path.parent / config.plans_dir})
    return config


def _override(plan: Plan, changes: dict[str, Any]) -> Plan:
    data = plan.model_dump(mode="json")
    step_changes = changes.get("steps", {})
    if not isinstance(step_changes, dict):
        raise PlanDefinitionError(f"plans.{plan.name}.steps must map step names to changes")
    unknown = set(step_changes) - {s["name"] for s in data["steps"]}
    if unknown:
        raise PlanDefinitionError(f"plan {plan.name} has no step {sorted(unknown)}")
    data.update({k: v for k, v in changes.items() if k != "steps"})
    data["steps"] = [{**s, **step_changes.get(s["name"], {})} for s in data["steps"]]
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanDefinitionError(f"plans.{plan.name}: {exc}") from exc


def configured_plans(config: SimulationConfig) -> tuple[Plan, ...]:
    plans = {p.name: p for p in load_plans(config.plans_dir, examples=config.examples)}
    unknown = set(config.plans) - set(plans)
    if unknown:
        raise PlanDefinitionError(f"no plan named {sorted(unknown)}")
    return tuple(
        _override(p, config.plans[name]) if name in config.plans else p for name, p in plans.items()
    )


def average_order(events: Path) -> Decimal | None:
    """The input's mean `Order Completed` total: the backtest's average basket by default."""
    total, count = Decimal(0), 0
    with events.open("rb") as handle:
        for line in handle:
            if b"Order Completed" not in line:
                continue
            message = orjson.loads(line)
            props = message.get("properties") or {}
            if message.get("event") != "Order Completed":
                continue
            value = props.get("total", props.get("revenue"))
            if value is None:
                continue
            total += Decimal(str(value))
            count += 1
    return (total / count).quantize(Decimal("0.01")) if count else None


def summary_table(rows: list[PlanSummary], *, sends: int, window_days: float) -> Table:
    table = Table(
        title=f"Backtest: {sends} messages (attribution window {window_days:g} days)",
    )
    table.add_column("plan")
    table.add_column("messages", justify="right")
    table.add_column("contacts", justify="right")
    table.add_column("attributed orders", justify="right")
    table.add_column("revenue", justify="right")
    for row in rows:
        table.add_row(
            row.plan,
            str(row.messages),
            str(row.contacts),
            str(row.attributed_orders),
            f"{row.revenue:.2f}",
        )
    return table


def simulate(
    events: Path,
    until: datetime,
    out: Path,
    config: Path | None = None,
    progress: bool = True,
    *,
    console_file: IO[str] | None = None,
) -> None:
    """Write one JSON line per message the plans would have sent up to `until`, then
    print the per-plan summary table (messages, contacts, attributed orders, revenue)."""
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    settings = read_config(config)
    shop = ShopFacts(
        shop_id=settings.shop.shop_id,
        timezone=settings.shop.timezone,
        average_basket=settings.shop.average_basket
        if settings.shop.average_basket is not None
        else average_order(events),
    )
    engine = Engine(configured_plans(settings), settings.policy())
    console = Console(file=console_file) if console_file is not None else Console()
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("wb") as sink:
        if progress:
            with Progress(
                TextColumn("simulating"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task("events", total=None)
                report: Callable[[int, int], None] = lambda done, total: bar.update(  # noqa: E731
                    task, completed=done, total=total
                )
                sim = simulate_segment_file(
                    events, until, sink, engine=engine, shop=shop, progress=report
                )
        else:
            sim = simulate_segment_file(events, until, sink, engine=engine, shop=shop)
    tmp.replace(out)
    console.print(
        summary_table(
            summarize(sim), sends=len(sim.sends), window_days=settings.attribution_window_days
        )
    )
