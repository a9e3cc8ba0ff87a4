"""Workers get resources by default: in a namespace whose ResourceQuota requires requests and memory
limits, a pool whose template sets none still gets its pods, sized for its lane."""

from __future__ import annotations

from typing import Any

from devenv.cluster import Cluster
from devenv.waiting import eventually
from e2e import pools

QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "compute"},
    "spec": {"hard": {"requests.cpu": "8", "requests.memory": "16Gi", "limits.memory": "32Gi"}},
}


def _pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = cluster.get("pods", "-l", "workerfleet.dev/pool=encode", namespace=namespace) or {}
    return list(listed.get("items", []))


def test_a_pool_without_resources_runs_in_a_namespace_whose_quota_requires_them(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a namespace whose quota refuses pods without CPU and memory requests and memory limits
    operator.apply(QUOTA, namespace=ns)
    eventually(
        lambda: (operator.get("resourcequota/compute", namespace=ns) or {}).get("status", {}).get("hard"),
        what="the quota to be counted",
    )
    heavy = pools.job_type("transcode")
    heavy["spec"].update({"lane": "heavy", "timeoutSeconds": 600})

    # When a pool of a heavy JobType, whose template sets no resources, is applied
    operator.apply(heavy, pools.pool("encode", ["transcode"]), namespace=ns)

    # Then its pod is admitted, with the heavy lane's requests and memory limit and no CPU limit
    [pod] = eventually(lambda: _pods(operator, ns), what="a pod of the pool", timeout=90)
    [worker] = pod["spec"]["containers"]
    assert worker["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
