"""Reads plan YAML files into validated `Plan` models (I/O lives here, not in the domain)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from relance_orchestrator.domain.errors import PlanDefinitionError
from relance_orchestrator.domain.plan import Plan

DEFAULT_PLANS = (
    "welcome_pack",
    "anti_churn",
    "birthday",
    "abandoned_cart",
    "cross_sell",
    "satisfaction_survey",
)
EXAMPLE_PLANS = ("replenishment", "re_engagement", "back_in_stock")


def parse_plan(text: str, *, source: str = "<string>") -> Plan:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanDefinitionError(f"{source}: not YAML: {exc}") from exc
    try:
        return Plan.model_validate(raw)
    except ValidationError as exc:
        raise PlanDefinitionError(f"{source}: {exc}") from exc


def _bundled(name: str, folder: str | None = None) -> Plan:
    root = resources.files("relance_orchestrator.plans")
    node = root / folder / f"{name}.yaml" if folder else root / f"{name}.yaml"
    return parse_plan(node.read_text(encoding="utf-8"), source=f"{name}.yaml")


def load_plans(
    directory: Path | None = None,
    *,
    examples: Iterable[str] = (),
) -> tuple[Plan, ...]:
    """The six bundled plans (plus any named examples); every `*.yaml` in `directory`
    replaces the bundled plan of the same name or adds a new one."""
    plans = {name: _bundled(name) for name in DEFAULT_PLANS}
    for name in examples:
        if name not in EXAMPLE_PLANS:
            raise PlanDefinitionError(f"no example plan named {name}")
        plans[name] = _bundled(name, "examples")
    if directory is not None:
        for path in sorted(directory.glob("*.yaml")):
            plan = parse_plan(path.read_text(encoding="utf-8"), source=str(path))
            plans[plan.name] = plan
    return tuple(plans.values())
