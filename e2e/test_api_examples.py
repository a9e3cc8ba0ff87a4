"""On a real API server (the CRDs installed by the session's `crds` fixture), every example is stored
as written (plus defaults), kubectl shows the printer columns, the scale subresource works, and
`kubectl explain` documents every field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.cluster import Cluster
from workerfleet.api.base import ApiModel
from workerfleet.api.crdgen import JOB_TYPE, WORKER_POOL
from workerfleet.api.jobtype import FailureClass, JobType
from workerfleet.api.workerpool import WorkerPool

REPOSITORY = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPOSITORY / "examples").glob("*.yaml"))
MODELS: dict[str, type[ApiModel]] = {"JobType": JobType, "WorkerPool": WorkerPool}
FIELD_LINE = re.compile(r"^  (\S+)\t<")

# The CRDs are cluster-wide: the session fixture `crds` installs them once and leaves them in place.
pytestmark = pytest.mark.usefixtures("crds")


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _apply_examples(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(REPOSITORY / "examples"))


def test_every_example_is_stored_as_written(cluster: Cluster, namespace: str) -> None:
    _apply_examples(cluster, namespace)

    for path in EXAMPLES:
        written = _load(path)
        stored = cluster.get(f"{written['kind'].lower()}/{written['metadata']['name']}", namespace=namespace)
        model = MODELS[written["kind"]]
        # What the API server stored, defaults included, is what the manifest means to the models.
        assert (
            model.model_validate(stored).model_dump()["spec"]
            == model.model_validate(written).model_dump()["spec"]
        )
    report = cluster.get("jobtype/render-report", namespace=namespace)
    assert report["spec"]["retry"]["retryOn"] == [
        FailureClass.TRANSIENT,
        FailureClass.TIMEOUT,
        FailureClass.UNKNOWN,
    ]
    assert report["spec"]["retry"]["backoff"]["jitter"] == 0.1
    reports_pool = cluster.get("workerpool/reports", namespace=namespace)
    assert reports_pool["spec"]["autoscaling"]["engine"] == "builtin"
    assert reports_pool["spec"]["paused"] is False


def _header(cluster: Cluster, namespace: str, resource: str) -> list[str]:
    lines = cluster.kubectl("get", resource, "-n", namespace).stdout.splitlines()
    return re.split(r"\s{2,}", lines[0].strip())


def test_kubectl_get_shows_the_printer_columns(cluster: Cluster, namespace: str) -> None:
    _apply_examples(cluster, namespace)
    status = {
        "status": {
            "replicas": 10,
            "readyReplicas": 9,
            "availableReplicas": 8,
            "selector": "workerfleet.dev/pool=thumbs-eu",
            "stableRevision": "5d8f7c",
            "canaryRevision": "7b9e21",
            "rollout": {"phase": "Progressing", "step": 2, "weight": 50},
            "queue": {"depth": 120},
        }
    }
    cluster.kubectl(
        "patch",
        "workerpool/thumbs-eu",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )

    assert _header(cluster, namespace, "wp") == [
        "NAME", "READY", "REPLICAS", "AVAILABLE", "PHASE", "STEP", "WEIGHT", "QUEUE DEPTH", "AGE",
    ]  # fmt: skip
    row = cluster.kubectl("get", "wp/thumbs-eu", "-n", namespace, "--no-headers").stdout.split()
    # REPLICAS is spec.replicas: 1, the default, as the autoscaled example leaves it out
    assert row[:8] == ["thumbs-eu", "9", "1", "8", "Progressing", "2", "50", "120"]
    wide = cluster.kubectl(
        "get", "wp/thumbs-eu", "-n", namespace, "-o", "wide", "--no-headers"
    ).stdout.split()
    assert wide[-2:] == ["5d8f7c", "7b9e21"]

    assert _header(cluster, namespace, "jt") == [
        "NAME", "LANE", "PRIORITY", "TIMEOUT", "MAX ATTEMPTS", "ACCEPTED", "NEXT RUN", "AGE",
    ]  # fmt: skip
    row = cluster.kubectl("get", "jt/transcode-video", "-n", namespace, "--no-headers").stdout.split()
    assert row[:5] == ["transcode-video", "heavy", "normal", "14400", "2"]

    names = cluster.kubectl("get", "workerfleet", "-n", namespace, "-o", "name").stdout.split()
    expected = {
        f"{_load(path)['kind'].lower()}.workerfleet.dev/{_load(path)['metadata']['name']}"
        for path in EXAMPLES
    }
    assert set(names) == expected
    category_table = cluster.kubectl("get", "workerfleet", "-n", namespace).stdout
    assert "QUEUE DEPTH" in category_table
    assert "MAX ATTEMPTS" in category_table


def test_scale_subresource_lets_an_hpa_target_a_pool(cluster: Cluster, namespace: str) -> None:
    _apply_examples(cluster, namespace)
    status = {"status": {"replicas": 2, "selector": "workerfleet.dev/pool=thumbs"}}
    cluster.kubectl(
        "patch",
        "workerpool/thumbs",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )

    cluster.kubectl("scale", "workerpool/thumbs", "-n", namespace, "--replicas=7")

    assert cluster.get("workerpool/thumbs", namespace=namespace)["spec"]["replicas"] == 7
    scale = json.loads(
        cluster.kubectl(
            "get", "--raw", f"/apis/workerfleet.dev/v1alpha1/namespaces/{namespace}/workerpools/thumbs/scale"
        ).stdout
    )
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 7
    assert scale["status"] == {"replicas": 2, "selector": "workerfleet.dev/pool=thumbs"}


def test_status_refuses_fields_it_does_not_know(cluster: Cluster, namespace: str) -> None:
    _apply_examples(cluster, namespace)
    result = cluster.kubectl(
        "patch", "workerpool/thumbs", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"rollout": {"phase": "Exploded"}}}), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'status.rollout.phase: Unsupported value: "Exploded"' in result.stderr


def test_lane_is_a_selectable_field(cluster: Cluster, namespace: str) -> None:
    _apply_examples(cluster, namespace)
    heavy = cluster.kubectl("get", "jt", "-n", namespace, "--field-selector=spec.lane=heavy", "-o", "name")
    assert heavy.stdout.split() == ["jobtype.workerfleet.dev/transcode-video"]


def _explained_fields(cluster: Cluster, path: str) -> dict[str, list[str]]:
    """The FIELDS section of `kubectl explain path`: each field's name and its description lines."""
    output = cluster.kubectl("explain", path).stdout.splitlines()
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in output[output.index("FIELDS:") + 1 :] if "FIELDS:" in output else []:
        header = FIELD_LINE.match(line)
        if header:
            current = header.group(1)
            fields[current] = []
        elif current is not None and line.startswith("    ") and line.strip():
            fields[current].append(line.strip())
    return fields


def _object_paths(cluster: Cluster, resource: str) -> list[str]:
    """Every field of `resource` that has fields of its own, from `kubectl explain --recursive`."""
    lines = cluster.kubectl("explain", resource, "--recursive").stdout.splitlines()
    entries = [
        (len(line) - len(line.lstrip(" ")), line.split("\t")[0].strip())
        for line in lines[lines.index("FIELDS:") + 1 :]
        if "\t" in line
    ]
    parents: list[str] = []
    objects = [resource]
    for index, (indent, name) in enumerate(entries):
        depth = indent // 2 - 1
        parents = [*parents[:depth], name]
        has_children = index + 1 < len(entries) and entries[index + 1][0] > indent
        if has_children and parents[0] != "metadata":
            objects.append(".".join([resource, *parents]))
    return objects


@pytest.mark.parametrize("resource", [WORKER_POOL.kind.lower(), JOB_TYPE.kind.lower()])
def test_kubectl_explain_describes_every_field(cluster: Cluster, resource: str) -> None:
    objects = _object_paths(cluster, resource)
    assert f"{resource}.spec" in objects
    assert f"{resource}.status.conditions" in objects

    undocumented = [
        f"{path}.{name}"
        for path in objects
        for name, description in _explained_fields(cluster, path).items()
        if not description
    ]
    assert undocumented == []


def test_kubectl_explain_autoscaling_reads_well(cluster: Cluster) -> None:
    fields = _explained_fields(cluster, "workerpool.spec.autoscaling")
    assert sorted(fields) == sorted(
        [
            "activationDepth", "behavior", "cooldownSeconds", "engine", "fallback", "maxReplicas",
            "minReplicas", "pollingIntervalSeconds", "targetDepthPerReplica",
        ]
    )  # fmt: skip
    assert " ".join(fields["pollingIntervalSeconds"]) == "How often queue depth is read. Defaults to 10."
    assert all(fields.values())
