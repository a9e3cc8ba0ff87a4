"""Workers get resources by default: in a namespace whose ResourceQuota requires requests and memory
limits, a pool whose template sets none still gets its pods, sized for its lane."""

from __future__ import annotations

from typing import Any

from e2e.cluster import Cluster
from e2e.test_children import _apply, _get, _job_type, _pool
from e2e.waiting import eventually

QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "compute"},
    "spec": {"hard": {"requests.cpu": "8", "requests.memory": "16Gi", "limits.memory": "32Gi"}},
}


def _pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = _get(cluster, namespace, "pods", "-l", "workerfleet.dev/pool=encode") or {}
    return list(listed.get("items", []))


def test_a_pool_without_resources_runs_in_a_namespace_whose_quota_requires_them(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a namespace whose quota refuses pods without CPU and memory requests and memory limits
    _apply(operator, ns, QUOTA)
    eventually(
        lambda: (_get(operator, ns, "resourcequota/compute") or {}).get("status", {}).get("hard"),
        what="the quota to be counted",
    )
    heavy = _job_type("transcode")
    heavy["spec"].update({"lane": "heavy", "timeoutSeconds": 600})

    # When a pool of a heavy JobType, whose template sets no resources, is applied
    _apply(operator, ns, heavy, _pool("encode", ["transcode"]))

    # Then its pod is admitted, with the heavy lane's requests and memory limit and no CPU limit
    [pod] = eventually(lambda: _pods(operator, ns), what="a pod of the pool", timeout=90)
    [worker] = pod["spec"]["containers"]
    assert worker["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
