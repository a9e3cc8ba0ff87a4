"""The Helm chart: lint, render every toggle, validate each manifest offline, scan with a policy checker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from e2e.toolchain import KUBERNETES_VERSION, binaries
from workerfleet.api.crdgen import render_all

REPOSITORY = Path(__file__).resolve().parents[2]
CHART = REPOSITORY / "charts" / "workerfleet"
VALUE_SETS = {
    "defaults": [],
    **{path.name.removesuffix("-values.yaml"): ["-f", str(path)] for path in sorted(CHART.glob("ci/*.yaml"))},
}
# Kinds of the Prometheus operator: no schema of theirs ships offline, so their shape is checked here.
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries()["helm"].path), *args], capture_output=True, text=True, check=False, timeout=60
    )


def _render(values: list[str]) -> list[dict[str, Any]]:
    result = _helm("template", "wf", str(CHART), "--namespace", "workerfleet-system", *values)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_passes(value_set: str) -> None:
    result = _helm("lint", "--strict", str(CHART), *VALUE_SETS[value_set])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_manifest_matches_the_kubernetes_schema(value_set: str) -> None:
    documents = _render(VALUE_SETS[value_set])
    version = KUBERNETES_VERSION.removeprefix("v")
    for document in documents:
        if document["kind"] in MONITORING_KINDS:
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            assert document["spec"], document
            continue
        kubernetes_validate.validate(document, version, strict=True)


def test_every_toggle_on_renders_every_optional_part() -> None:
    kinds = {document["kind"] for document in _render(VALUE_SETS["every-toggle-on"])}
    assert kinds >= {
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "APIService",
        "RoleBinding",
    }


def test_keda_mode_registers_no_metrics_api() -> None:
    documents = _render(VALUE_SETS["keda-mode"])
    kinds = [document["kind"] for document in documents]
    assert "APIService" not in kinds
    bindings = [d["roleRef"]["name"] for d in documents if d["kind"] in {"ClusterRoleBinding", "RoleBinding"}]
    assert "system:auth-delegator" not in bindings
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    assert not [
        arg for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"] if "api" in arg
    ]


def test_prometheus_rule_has_the_four_alerts() -> None:
    [rule] = [d for d in _render(VALUE_SETS["every-toggle-on"]) if d["kind"] == "PrometheusRule"]
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {
        "WorkerfleetQueueBacklog",
        "WorkerfleetJobsNearDeadline",
        "WorkerfleetPoolDegraded",
        "WorkerfleetFallbackActive",
    }
    assert alerts["WorkerfleetQueueBacklog"]["for"] == "10m"


def test_grafana_dashboard_is_valid_json() -> None:
    [dashboard] = [
        d
        for d in _render(VALUE_SETS["every-toggle-on"])
        if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    panels = json.loads(dashboard["data"]["workerfleet.json"])["panels"]
    assert any("workerfleet_queue_depth" in target["expr"] for panel in panels for target in panel["targets"])


@pytest.mark.parametrize(
    "bad_value",
    ["replicaCount=2", "logLevel=trace", "metricsApi.port=80", "unknownKey=1", "image.digest=latest"],
)
def test_bad_values_fail_at_install_time(bad_value: str) -> None:
    result = _helm("template", "wf", str(CHART), "--set", bad_value)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_the_operator_may_not_escalate_or_bind_by_default() -> None:
    rules = [
        rule
        for document in _render(VALUE_SETS["defaults"])
        if document["kind"] == "ClusterRole"
        for rule in document["rules"]
    ]
    verbs = {verb for rule in rules for verb in rule["verbs"]}
    resources = {resource for rule in rules for resource in rule["resources"]}
    assert not verbs & {"escalate", "bind", "impersonate", "*"}
    assert "*" not in resources
    assert "pods/exec" not in resources
    [secrets] = [rule for rule in rules if "secrets" in rule["resources"]]
    assert secrets["verbs"] == ["get"]


def test_policy_checker_finds_no_failed_kubernetes_check(tmp_path: Path) -> None:
    for value_set, values in VALUE_SETS.items():
        (tmp_path / f"{value_set}.yaml").write_text(yaml.safe_dump_all(_render(values)))
    checkov = Path(sys.executable).parent / "checkov"
    result = subprocess.run(
        [
            str(checkov),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--quiet",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["passed"] > 100, summary
    assert failed == [], failed
    assert summary["parsing_errors"] == 0


def test_chart_crds_are_the_generated_ones() -> None:
    chart_crds = {path.name: path.read_text() for path in (CHART / "crds").glob("*.yaml")}
    assert chart_crds == render_all(), "charts/workerfleet/crds is stale: run `make crds`"


def test_images_pass_the_policy_checker() -> None:
    checkov = Path(sys.executable).parent / "checkov"
    result = subprocess.run(
        [
            str(checkov),
            "--directory",
            str(REPOSITORY / "images"),
            "--framework",
            "dockerfile",
            "--quiet",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == [], failed
    assert report["summary"]["passed"] > 20, report["summary"]
    users = [
        line
        for path in (REPOSITORY / "images").glob("*/Dockerfile")
        for line in path.read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users == ["USER 65532:65532"] * 2
