"""docker-compose.yml is checked without a Docker engine: against the Compose Specification
schema, and against the repository (build paths, Dockerfiles, environment variables)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from relance_runtime.catalog import variables
from relance_runtime.registry import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SCHEMA = json.loads((REPO / "tests/data/compose-spec.schema.json").read_text())


def known_variables() -> set[str]:
    return {v.name for v in variables()}


def test_the_file_follows_the_compose_specification() -> None:
    jsonschema.validate(COMPOSE, SCHEMA)


def test_infrastructure_and_all_five_services_are_there() -> None:
    services: dict[str, Any] = COMPOSE["services"]
    assert {"kafka", "postgres", "mailpit"} <= set(services)
    assert set(SERVICE_NAMES) <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_service_builds_the_shared_dockerfile_for_itself(name: str) -> None:
    build = COMPOSE["services"][name]["build"]
    context = REPO / build["context"]
    dockerfile = context / build["dockerfile"]
    assert context.is_dir()
    assert dockerfile.is_file()
    assert build["args"] == {"SERVICE": name}
    text = dockerfile.read_text()
    # what the build arg turns into: the service's package and its module
    assert 'uv sync --frozen --no-dev --no-editable --package "relance-$SERVICE"' in text
    assert "SERVICE_MODULE=relance_$SERVICE" in text
    assert 'exec python -m \\"$SERVICE_MODULE\\"' in text
    assert (REPO / "services" / name / "pyproject.toml").read_text().count(
        f'name = "relance-{name}"'
    ) == 1
    assert importlib.util.find_spec(f"relance_{name}.__main__") is not None
    for copied in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.M):
        assert (context / copied).exists(), f"{dockerfile} copies missing {copied}"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_relance_variable_is_one_the_code_reads(name: str) -> None:
    known = known_variables()
    environment: dict[str, Any] = COMPOSE["services"][name]["environment"]
    unknown = sorted(k for k in environment if k.startswith("RELANCE_") and k not in known)
    assert not unknown, f"{name} sets variables no settings class reads: {unknown}"
    assert environment["RELANCE_BUS"] == "kafka"
    assert environment["RELANCE_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_the_edge_routes_every_public_path_as_the_kubernetes_ingress_does() -> None:
    """One public host for the Segment API and the links in messages: survey and
    leave-reason links must reach feedback on Docker as on Kubernetes."""
    edge = COMPOSE["services"]["edge"]
    assert "8000:80" in edge["ports"]
    mounted = edge["volumes"][0].split(":")
    conf = (REPO / mounted[0]).read_text()
    assert mounted[1] == "/etc/nginx/nginx.conf"
    routes = dict(
        re.findall(r"location (\S+) \{ set \$up (\w+); proxy_pass http://\$up:8000; \}", conf)
    )
    ingress = yaml.safe_load((REPO / "deploy/k8s/ingress.yaml").read_text())
    (rule,) = ingress["spec"]["rules"]
    expected = {
        p["path"]: p["backend"]["service"]["name"].removeprefix("relance-")
        for p in rule["http"]["paths"]
    }
    assert routes == expected
    assert set(routes.values()) <= set(COMPOSE["services"])
    assert not any("8000:8000" in s.get("ports", []) for s in COMPOSE["services"].values())
