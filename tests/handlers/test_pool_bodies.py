"""The pool bodies a task set keeps: each pool costs about its compact JSON, not a tree of objects."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

from workerfleet.handlers.pool_tasks import PoolBodies

POOLS = 200


def _pool(index: int) -> dict[str, Any]:
    """A pool as a watch event shows it once Ready (managedFields already dropped by the router)."""
    conditions = [
        {
            "type": kind,
            "status": "True",
            "reason": "AsPlanned",
            "message": f"pool-{index}: every replica is ready and serves its queue",
            "lastTransitionTime": "2026-12-07T22:00:00Z",
            "observedGeneration": 1,
        }
        for kind in ("Ready", "Progressing", "ScalingActive", "QueueReachable", "Degraded", "CircuitOpen")
    ]
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {
            "name": f"pool-{index}",
            "namespace": "media",
            "uid": f"6f1c0d2e-0000-4000-8000-{index:012d}",
            "resourceVersion": str(1000 + index),
            "generation": 1,
            "labels": {"team": "media", "tier": "batch"},
        },
        "spec": {
            "jobTypes": ["thumbs"],
            "queue": {"redis": {"address": "redis.media:6379", "list": f"jobs:pool-{index}"}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetDepthPerReplica": 50},
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
        },
        "status": {"replicas": 1, "readyReplicas": 1, "conditions": conditions, "queue": {"depth": 0}},
    }


def test_a_read_gives_back_the_body_stored_and_a_change_to_it_is_not_kept() -> None:
    bodies = PoolBodies()
    bodies[("media", "pool-1")] = _pool(1)

    read = bodies[("media", "pool-1")]
    read["spec"]["jobTypes"].append("edited")

    assert bodies[("media", "pool-1")] == _pool(1)
    assert ("media", "pool-1") in bodies
    assert bodies.pop(("media", "pool-1"), None) is not None
    assert ("media", "pool-1") not in bodies
    assert bodies.get(("media", "pool-1")) is None


def test_each_pool_costs_about_its_compact_json() -> None:
    pools = [_pool(index) for index in range(POOLS)]
    compact = sum(len(json.dumps(pool, separators=(",", ":"))) for pool in pools) / POOLS
    bodies = PoolBodies()

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index, pool in enumerate(pools):
            bodies[("media", f"pool-{index}")] = pool
        per_pool = (tracemalloc.get_traced_memory()[0] - before) / POOLS
    finally:
        tracemalloc.stop()

    assert per_pool < 1.5 * compact, f"{per_pool:.0f} bytes a pool kept for {compact:.0f} bytes of JSON"
