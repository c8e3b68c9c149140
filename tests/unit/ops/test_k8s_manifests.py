"""deploy/k8s is checked without a cluster: parsed with PyYAML and held against the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from relance_runtime.catalog import variables
from relance_runtime.registry import SERVICE_NAMES, SUBSCRIPTIONS

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
DOCS: list[dict[str, Any]] = [
    doc
    for name in KUSTOMIZATION["resources"]
    for doc in yaml.safe_load_all((K8S / name).read_text())
    if doc
]
UVICORN_SLACK_S = 5  # relance_runtime.serve: timeout_graceful_shutdown = drain + 5


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] == kind}


def config() -> dict[str, str]:
    data: dict[str, str] = objects("ConfigMap")["relance-config"]["data"]
    return data


def container(service: str) -> dict[str, Any]:
    deployment = objects("Deployment")[f"relance-{service}"]
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    assert isinstance(match, int)
    return match


def test_kustomization_lists_every_manifest_and_each_parses() -> None:
    listed = set(KUSTOMIZATION["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    for doc in DOCS:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"]["name"]
    images = {i["name"] for i in KUSTOMIZATION["images"]}
    assert images == {f"relance-{s}" for s in SERVICE_NAMES}


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_service_runs_its_module_with_probes_on_its_http_port(service: str) -> None:
    c = container(service)
    command = [*c.get("command", []), *c.get("args", [])]
    assert command[:3] == ["python", "-m", f"relance_{service}"]
    assert c["image"].split(":")[0] == f"relance-{service}"
    listen = int(command[command.index("--port") + 1])
    assert port_number(c, "http") == listen
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(c, get["port"]) == listen, probe
    service_object = objects("Service")[f"relance-{service}"]
    pod_labels = objects("Deployment")[f"relance-{service}"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service_object["spec"]["selector"].items() <= pod_labels.items()
    (target,) = service_object["spec"]["ports"]
    assert port_number(c, target["targetPort"]) == listen
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_the_grace_period_covers_the_prestop_sleep_and_the_drain(service: str) -> None:
    spec = objects("Deployment")[f"relance-{service}"]["spec"]["template"]["spec"]
    c = container(service)
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain = float(config()["RELANCE_DRAIN_TIMEOUT_S"])
    assert spec["terminationGracePeriodSeconds"] > drain
    assert spec["terminationGracePeriodSeconds"] > float(sleep[1]) + drain + UVICORN_SLACK_S


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_environment_comes_from_objects_that_exist(service: str) -> None:
    c = container(service)
    refs = {
        ("ConfigMap" if "configMapRef" in ref else "Secret"): (
            ref.get("configMapRef") or ref["secretRef"]
        )["name"]
        for ref in c["envFrom"]
    }
    assert refs["ConfigMap"] in objects("ConfigMap")
    for ref in c["envFrom"]:
        if "secretRef" in ref:
            assert ref["secretRef"]["name"] in objects("Secret")


def referenced_variables() -> set[str]:
    names: set[str] = set(config())
    for secret in objects("Secret").values():
        names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for service in SERVICE_NAMES:
        names |= {e["name"] for e in container(service).get("env", [])}
    return {n for n in names if n.startswith("RELANCE_")}


def test_every_relance_variable_is_one_the_code_reads() -> None:
    known = {v.name for v in variables()}
    referenced = referenced_variables()
    assert {"RELANCE_BUS", "RELANCE_DATABASE_URL", "RELANCE_TOKEN_KEYS"} <= referenced
    unknown = sorted(referenced - known)
    assert not unknown, f"manifests set variables no settings class reads: {unknown}"
    assert config()["RELANCE_BUS"] == "kafka"


def test_consumers_have_disruption_budgets_and_ingest_autoscales() -> None:
    budgets = objects("PodDisruptionBudget")
    consumers = [s for s in SERVICE_NAMES if SUBSCRIPTIONS[s]]
    assert consumers
    for service in consumers:
        selector = budgets[f"relance-{service}"]["spec"]["selector"]["matchLabels"]
        labels = objects("Deployment")[f"relance-{service}"]["spec"]["template"]["metadata"][
            "labels"
        ]
        assert selector.items() <= labels.items()
    (hpa,) = objects("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "relance-ingest",
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_ingress_routes_to_existing_services() -> None:
    services = objects("Service")
    for ingress in objects("Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services
                names = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in names
