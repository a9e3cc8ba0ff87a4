"""PodSecurity admission of a real API server, enforcing `restricted`, accepts the pod the operator
makes from every pod template of the bad-input corpus: a template admitted before the template rules
existed (or read back from a Deployment's annotation) still yields a restricted pod."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devenv.cluster import Cluster
from e2e.test_api_bad_input import BASES, CASES, Case
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import WorkerPoolSpec
from workerfleet.planners.children import PoolRef, Workers, names, plan_children

POOL = PoolRef(name="legacy", namespace="unused", uid="1234")
SPEC = WorkerPoolSpec.model_validate(
    {
        "jobTypes": ["resize-image"],
        "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
        "queue": {"redis": {"address": "redis:6379", "list": "jobs"}},
    }
)
JOB_TYPES = {"resize-image": JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 30})}
CANNOT_RUN = {
    "container-without-image",
    "container-without-name",
    "init-container-without-image",
    "template-without-containers",
    "template-with-no-containers",
}
"""Templates no pod can be made of, restricted or not: the Pod API refuses them too."""
TEMPLATE_CASES = [
    case
    for case in CASES
    if case.kind == "WorkerPool"
    and case.manifest["spec"].get("template") not in (None, BASES["WorkerPool"]["spec"]["template"])
    and case.name not in CANNOT_RUN
]


def _pod(case: Case, template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": case.name,
            **{k: v for k, v in template.get("metadata", {}).items() if k != "name"},
        },
        "spec": template["spec"],
    }


def _operator_pod(case: Case) -> dict[str, Any]:
    workers = Workers(stable_template=case.manifest["spec"]["template"], stable_replicas=1)
    [deployment] = [
        manifest
        for manifest in plan_children(POOL, SPEC, JOB_TYPES, workers).apply
        if manifest["kind"] == "Deployment"
    ]
    return _pod(case, deployment["spec"]["template"])


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("create", "serviceaccount", names(POOL.name).service_account, "-n", namespace)
    return namespace


def _create(cluster: Cluster, namespace: str, pods: list[dict[str, Any]]) -> Any:
    listed = {"apiVersion": "v1", "kind": "List", "items": pods}
    return cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input_text=json.dumps(listed), check=False
    )


def test_the_corpus_has_templates_that_reach_past_the_pod() -> None:
    assert len(TEMPLATE_CASES) >= 25


def test_restricted_admission_refuses_those_templates_as_written(cluster: Cluster, restricted: str) -> None:
    # The check bites: the privileged template itself, as a pod, is refused.
    [privileged] = [case for case in TEMPLATE_CASES if case.name == "privileged-container"]
    result = _create(cluster, restricted, [_pod(privileged, privileged.manifest["spec"]["template"])])
    assert 'violates PodSecurity "restricted:latest"' in result.stderr


def test_the_operator_makes_a_restricted_pod_of_each_of_them(cluster: Cluster, restricted: str) -> None:
    result = _create(cluster, restricted, [_operator_pod(case) for case in TEMPLATE_CASES])
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr
    assert result.stdout.count("created (server dry run)") == len(TEMPLATE_CASES)
