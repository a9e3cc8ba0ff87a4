"""How a pool's children are applied: failed reconciles are retried, hand edits are put back by the
periodic resync, and objects the pool does not own are never taken over or deleted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devenv.chart import OPERATOR_USER
from devenv.cluster import Cluster
from devenv.operator import OperatorProcess
from devenv.servers import RedisServer
from devenv.waiting import eventually
from e2e import pools

RESYNC_SECONDS = 6
"""A short resync period for the drift test (the default is minutes)."""
RESYNC_JITTER = 0.2
"""The resync period is jittered by up to this fraction (see handlers/resync.py)."""


def _condition(cluster: Cluster, namespace: str, pool: str, condition_type: str = "Ready") -> Any:
    body = cluster.get(f"workerpool/{pool}", namespace=namespace) or {}
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == condition_type:
            return condition["status"], condition["reason"], condition["message"]
    return None


def _warnings(cluster: Cluster, namespace: str, pool: str, reason: str) -> list[str]:
    events = cluster.get("events", "--field-selector", f"involvedObject.name={pool}", namespace=namespace)
    return [
        event["message"]
        for event in (events or {}).get("items", [])
        if (event["type"], event["reason"]) == ("Warning", reason)
    ]


READ_PRESETS = {
    "apiGroups": [""],
    "resources": ["configmaps"],
    "verbs": ["get"],
    "resourceNames": ["presets"],
}


def test_a_failed_reconcile_is_retried_without_anyone_editing_the_pool(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a namespace whose quota admits no more ConfigMaps (the pool needs one for its policies)
    operator.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-more-configmaps"},
            "spec": {"hard": {"count/configmaps": "1"}},
        },
        namespace=ns,
    )
    eventually(
        lambda: (
            (operator.get("resourcequota/no-more-configmaps", namespace=ns) or {})
            .get("status", {})
            .get("used")
        ),
        what="the quota's usage to be counted",
    )

    # When a pool is applied there
    operator.apply(pools.job_type("resize", [READ_PRESETS]), pools.pool("thumbs", ["resize"]), namespace=ns)

    # Then it is not Ready, and says that applying failed
    eventually(
        lambda: (_condition(operator, ns, "thumbs") or ("",))[:2] == ("False", "ApplyFailed"),
        what="Ready=False ApplyFailed",
    )

    # When the quota goes away, and nobody touches the pool
    generation = operator.get("workerpool/thumbs", namespace=ns)["metadata"]["generation"]
    operator.kubectl("delete", "resourcequota", "no-more-configmaps", "-n", ns)
    started = time.monotonic()

    # Then the operator retries by itself and the pool becomes Ready
    eventually(
        lambda: pools.ready(operator, ns, "thumbs"), what="thumbs Ready after the quota went", timeout=90
    )
    print(f"Ready {time.monotonic() - started:.1f}s after the quota was deleted")
    assert operator.get("workerpool/thumbs", namespace=ns)["metadata"]["generation"] == generation


@pytest.fixture
def fast_resync_operator(operator_process: OperatorProcess) -> Iterator[OperatorProcess]:
    """The suite's operator (with the chart's flags), restarted with a resync period of a few seconds;
    restored afterwards."""
    operator_process.stop()
    process = OperatorProcess(
        operator_process.cluster,
        operator_process.log,
        operator_process.kubeconfig,
        extra_args=[*operator_process.extra_args, f"--resync-period={RESYNC_SECONDS}"],
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()
        operator_process.start()


def _hand_edits(cluster: Cluster, namespace: str) -> None:
    """What a person with edit rights might do to each kind of child."""

    def patch(kind: str, patch_type: str, body: Any) -> None:
        cluster.kubectl("patch", kind, "-n", namespace, f"--type={patch_type}", "-p", json.dumps(body))

    secrets = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    patch("role/thumbs-worker", "json", [{"op": "add", "path": "/rules/-", "value": secrets}])
    default = {"kind": "ServiceAccount", "name": "default", "namespace": namespace}
    patch("rolebinding/thumbs-worker", "json", [{"op": "add", "path": "/subjects/-", "value": default}])
    patch("serviceaccount/thumbs-worker", "merge", {"automountServiceAccountToken": False})
    patch("configmap/thumbs-policies", "merge", {"data": {"policies.json": "{}"}})
    patch("horizontalpodautoscaler/thumbs", "merge", {"spec": {"maxReplicas": 9}})
    patch("poddisruptionbudget/thumbs", "merge", {"spec": {"maxUnavailable": 2}})
    cluster.kubectl("scale", "deployment/thumbs", "--replicas=5", "-n", namespace)


def _children(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The fields of each child that the hand edits change."""
    role = cluster.get("role/thumbs-worker", namespace=namespace)
    binding = cluster.get("rolebinding/thumbs-worker", namespace=namespace)
    account = cluster.get("serviceaccount/thumbs-worker", namespace=namespace)
    policies = cluster.get("configmap/thumbs-policies", namespace=namespace)
    autoscaler = cluster.get("horizontalpodautoscaler/thumbs", namespace=namespace)
    budget = cluster.get("poddisruptionbudget/thumbs", namespace=namespace)
    deployment = cluster.get("deployment/thumbs", namespace=namespace)
    return {
        "role": role["rules"],
        "rolebinding": binding["subjects"],
        "serviceaccount": account.get("automountServiceAccountToken"),
        "configmap": policies["data"],
        "hpa": autoscaler["spec"]["maxReplicas"],
        "pdb": budget["spec"].get("maxUnavailable"),
        "deployment": deployment["spec"]["replicas"],
    }


def test_hand_edits_to_every_kind_of_child_are_repaired_within_one_resync_period(
    fast_resync_operator: OperatorProcess, restricted_namespace: str, redis_server: RedisServer
) -> None:
    cluster, ns = fast_resync_operator.cluster, restricted_namespace
    # Given an autoscaled pool with two workers, a Role, a disruption budget and an HPA, all Ready
    pool = pools.pool("thumbs", ["resize"], replicas=2)
    pool["spec"]["queue"] = {"redis": {"address": redis_server.address, "list": "jobs:thumbs"}}
    pool["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 2, "targetDepthPerReplica": 20}
    cluster.apply(pools.job_type("resize", [READ_PRESETS]), pool, namespace=ns)
    eventually(lambda: pools.ready(cluster, ns, "thumbs"), what="thumbs Ready", timeout=90)
    applied = _children(cluster, ns)

    # When someone edits every child by hand
    _hand_edits(cluster, ns)
    edited = time.monotonic()

    # Then each is put back within one resync period
    limit = RESYNC_SECONDS * (1 + RESYNC_JITTER) + 5
    eventually(lambda: _children(cluster, ns) == applied, what="every child as applied", timeout=limit)
    print(f"every hand edit repaired {time.monotonic() - edited:.1f}s after it was made")

    # When the workers the hand scale-up added are gone (the pool's status follows that change), and
    # then nothing changes for three resync periods
    def settled() -> bool:
        deployment = cluster.get("deployment/thumbs", namespace=ns) or {}
        return (deployment.get("status") or {}).get("replicas") == 2 and pools.ready(cluster, ns, "thumbs", 2)

    eventually(settled, what="two workers again, and the pool's status saying so", timeout=60)
    time.sleep(3)
    before = len(cluster.audit_writes(user=OPERATOR_USER, namespace=ns))
    time.sleep(3 * RESYNC_SECONDS)

    # Then the resyncs wrote nothing
    late = cluster.audit_writes(user=OPERATOR_USER, namespace=ns)[before:]
    assert late == [], [(write["verb"], write["objectRef"]) for write in late]


TAKEN = (
    "serviceaccount/ci-worker",
    "horizontalpodautoscaler/web",
    "poddisruptionbudget/web",
    "deployment/api",
)


def _untouchable(cluster: Cluster, namespace: str, kind: str) -> Any:
    """What the operator would change if it took the object over: its identity, labels, annotations,
    owners, spec, and whether the operator's field manager ever wrote to it."""
    body = cluster.get(kind, "--show-managed-fields", namespace=namespace)
    if body is None:
        return None
    metadata = body["metadata"]
    return {
        "uid": metadata["uid"],
        "labels": metadata.get("labels"),
        "annotations": metadata.get("annotations"),
        "ownerReferences": metadata.get("ownerReferences"),
        "spec": body.get("spec"),
        "automountServiceAccountToken": body.get("automountServiceAccountToken"),
        "workerfleet wrote": any(entry["manager"] == "workerfleet" for entry in metadata["managedFields"]),
    }


def test_children_whose_names_are_taken_are_neither_taken_over_nor_deleted(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a ServiceAccount ci-worker, an HPA web and a disruption budget web that someone else made
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "elsewhere"},
            "minReplicas": 1,
            "maxReplicas": 3,
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ci-worker"}}
    # And a Deployment api (the operator watches only Deployments labelled as a pool's; this one is not)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "api:1"}]},
            },
        },
    }
    operator.apply(account, autoscaler, budget, deployment, namespace=ns)
    existing = {kind: _untouchable(operator, ns, kind) for kind in TAKEN}

    # When pools ci, api and web are applied (web with one replica and no autoscaling: no HPA, no budget)
    operator.apply(
        pools.job_type("build"),
        pools.pool("ci", ["build"]),
        pools.pool("api", ["build"]),
        pools.pool("web", ["build"]),
        namespace=ns,
    )

    # Then ci is not Ready because of the taken name, and a Warning Event names the object
    eventually(
        lambda: (_condition(operator, ns, "ci") or ("",))[:2] == ("False", "NameConflict"),
        what="ci Ready=False NameConflict",
    )
    assert "ServiceAccount ci-worker" in _condition(operator, ns, "ci")[2]
    warnings = eventually(
        lambda: _warnings(operator, ns, "ci", "NameConflict"), what="a NameConflict Warning Event"
    )
    assert "ServiceAccount ci-worker" in warnings[0], warnings

    eventually(
        lambda: (_condition(operator, ns, "api") or ("",))[:2] == ("False", "NameConflict"),
        what="api Ready=False NameConflict",
    )
    assert "Deployment api" in _condition(operator, ns, "api")[2]

    # And web is Ready beside what it does not own
    eventually(lambda: pools.ready(operator, ns, "web"), what="web Ready", timeout=90)

    # And nothing that existed was touched, and ci got no workers running as someone else's account
    for kind, before in existing.items():
        assert _untouchable(operator, ns, kind) == before, f"{kind} was changed or deleted"
    assert operator.get("deployment/ci", namespace=ns) is None

    # When the ServiceAccount is deleted by its owner, and nobody touches the pool
    operator.kubectl("delete", "serviceaccount", "ci-worker", "-n", ns)

    # Then ci creates its own and becomes Ready by itself
    eventually(lambda: pools.ready(operator, ns, "ci"), what="ci Ready once the name is free", timeout=90)
    owners = operator.get("serviceaccount/ci-worker", namespace=ns)["metadata"]["ownerReferences"]
    assert [(owner["kind"], owner["name"]) for owner in owners] == [("WorkerPool", "ci")]


def test_a_name_taken_before_the_pool_exists_is_reported_with_who_holds_it(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a ConfigMap thumbs-policies that a user made (kubectl create records its field manager)
    operator.kubectl("create", "configmap", "thumbs-policies", "-n", ns, "--from-literal=mine=yes")
    before = _untouchable(operator, ns, "configmap/thumbs-policies")
    data = operator.get("configmap/thumbs-policies", namespace=ns)["data"]

    # When a pool thumbs is created
    operator.apply(pools.job_type("resize"), pools.pool("thumbs", ["resize"]), namespace=ns)

    # Then it is Ready=False NameConflict, and the condition and a Warning Event name the object and
    # who holds it
    eventually(
        lambda: (_condition(operator, ns, "thumbs") or ("",))[:2] == ("False", "NameConflict"),
        what="thumbs Ready=False NameConflict",
    )
    message = _condition(operator, ns, "thumbs")[2]
    assert "ConfigMap thumbs-policies" in message, message
    assert "managed by kubectl-create" in message, message
    warnings = eventually(
        lambda: _warnings(operator, ns, "thumbs", "NameConflict"), what="a NameConflict Warning Event"
    )
    assert "ConfigMap thumbs-policies" in warnings[0], warnings
    assert "managed by kubectl-create" in warnings[0], warnings

    # And the ConfigMap is as it was, and no workers run without their policies
    assert _untouchable(operator, ns, "configmap/thumbs-policies") == before
    assert operator.get("configmap/thumbs-policies", namespace=ns)["data"] == data
    assert operator.get("deployment/thumbs", namespace=ns) is None
