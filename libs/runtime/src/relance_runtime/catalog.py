"""Every RELANCE_* variable any settings class reads: for `relance config`, the README's
configuration reference and the checks that keep both honest."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from relance_runtime.registry import SERVICE_NAMES
from relance_runtime.settings import CommonSettings


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    scope: str
    default: str
    description: str


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    found: list[tuple[str, type[BaseSettings]]] = [("all", CommonSettings)]
    for service in SERVICE_NAMES:
        module_name = f"relance_{service}.settings"
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseSettings)
                and obj.__module__ == module_name
            ):
                found.append((service, obj))
    return found


def variables() -> list[Variable]:
    out: dict[str, Variable] = {}
    for scope, cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names = [str(choice).upper() for choice in alias.choices]
            elif isinstance(alias, str):
                names = [alias.upper()]
            else:
                names = [f"{prefix}{field_name}".upper()]
            default = (
                "" if field.is_required() else repr(field.get_default(call_default_factory=True))
            )
            for name in names:
                out.setdefault(
                    name, Variable(name, scope, default, (field.description or "").strip())
                )
    return sorted(out.values(), key=lambda v: (v.scope != "all", v.scope, v.name))
