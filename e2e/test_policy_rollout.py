"""JobType policies reach running workers: a change of a JobType, or of the pool's jobTypes, rolls the
pods (the worker runtime reads the policies once, at start), and every worker pod gets the runtime's
port and probes."""

from __future__ import annotations

import json
import time

from devenv.cluster import Cluster
from devenv.waiting import eventually
from e2e import pools


def _pods(cluster: Cluster, namespace: str, pool: str) -> set[str]:
    found = cluster.get("pods", "-l", f"workerfleet.dev/pool={pool}", namespace=namespace)
    return {pod["metadata"]["name"] for pod in found["items"] if not pod["metadata"].get("deletionTimestamp")}


def _policies(cluster: Cluster, namespace: str, pool: str) -> dict[str, object]:
    config_map = cluster.get(f"configmap/{pool}-policies", namespace=namespace)
    document: dict[str, object] = json.loads(config_map["data"]["policies.json"])["jobTypes"]
    return document


def _rolled(cluster: Cluster, namespace: str, pool: str, before: set[str]) -> bool:
    """Every pod of the pool replaced by a new one, and the pool Ready again."""
    now = _pods(cluster, namespace, pool)
    return bool(now) and not (now & before) and pools.ready(cluster, namespace, pool, 1)


def test_a_job_type_change_rolls_the_workers_and_its_pods_carry_probes(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a running pool of one JobType
    operator.apply(
        pools.job_type("render"), pools.job_type("archive"), pools.pool("renderers", ["render"]), namespace=ns
    )
    eventually(lambda: pools.ready(operator, ns, "renderers", 1), what="renderers Ready", timeout=90)
    first = _pods(operator, ns, "renderers")
    revision = operator.get("deployment/renderers", namespace=ns)["metadata"]["labels"][
        "workerfleet.dev/revision"
    ]

    # Then its pod has the runtime's port and probes against it (admitted by the restricted profile)
    [pod] = operator.get("pods", "-l", "workerfleet.dev/pool=renderers", namespace=ns)["items"]
    [container] = pod["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 8000, "protocol": "TCP"} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTP"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", "scheme": "HTTP"}

    # When the JobType's retry policy changes
    changed = pools.job_type("render")
    changed["spec"]["retry"] = {"maxAttempts": 9}
    started = time.monotonic()
    operator.apply(changed, namespace=ns)

    # Then the policies the workers read say so, and every worker is replaced, with no canary
    eventually(
        lambda: _policies(operator, ns, "renderers")["render"]["retry"]["maxAttempts"] == 9,  # type: ignore[index]
        what="the new retry policy in the policies ConfigMap",
    )
    eventually(lambda: _rolled(operator, ns, "renderers", first), what="the workers to roll", timeout=90)
    print(f"JobType change to every worker replaced and Ready: {time.monotonic() - started:.1f}s")
    deployment = operator.get("deployment/renderers", namespace=ns)
    assert deployment["metadata"]["labels"]["workerfleet.dev/revision"] == revision
    assert operator.get("deployment/renderers-canary", namespace=ns) is None

    # When the pool serves one more JobType
    second = _pods(operator, ns, "renderers")
    pool = pools.pool("renderers", ["render", "archive"])
    operator.apply(pool, namespace=ns)

    # Then the workers roll again, onto policies with both
    eventually(
        lambda: _rolled(operator, ns, "renderers", second), what="the workers to roll again", timeout=90
    )
    assert sorted(_policies(operator, ns, "renderers")) == ["archive", "render"]
