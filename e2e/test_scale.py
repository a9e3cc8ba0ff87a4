"""The operator starts, and restarts, over more pools than any concurrency limit it has."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from devenv.chart import OPERATOR_USER
from devenv.cluster import Cluster
from devenv.operator import OperatorProcess
from devenv.waiting import eventually
from workerfleet.backends.redis_common import MAX_CONNECTIONS_PER_SERVER
from workerfleet.handlers.reconcile_queue import MAX_CONCURRENT_RECONCILES
from workerfleet.kube.client import CONNECTION_POOL_SIZE

POOLS = 3 * max(MAX_CONCURRENT_RECONCILES, CONNECTION_POOL_SIZE, MAX_CONNECTIONS_PER_SERVER) + 4
"""Past three times every concurrency limit of the operator: a start-up that holds a slot per object
while it waits for all objects deadlocks here."""


def _job_type(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": name},
        "spec": {"lane": "fast", "timeoutSeconds": 30},
    }


def _pool(name: str, job_type: str) -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "jobTypes": [job_type],
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
            "queue": {"redis": {"address": "127.0.0.1:6379", "list": f"jobs:{name}"}},
        },
    }


def _ready_pools(cluster: Cluster, namespace: str) -> set[str]:
    listing = json.loads(cluster.kubectl("get", "workerpools", "-n", namespace, "-o", "json").stdout)
    ready = set()
    for pool in listing["items"]:
        for condition in (pool.get("status") or {}).get("conditions") or []:
            if condition["type"] == "Ready" and condition["status"] == "True":
                ready.add(pool["metadata"]["name"])
    return ready


def test_the_operator_starts_over_more_pools_than_its_concurrency_limit_and_restarts_without_writes(
    operator_process: OperatorProcess, restricted_namespace: str
) -> None:
    cluster, ns = operator_process.cluster, restricted_namespace
    names = {f"pool-{index}" for index in range(POOLS)}

    # Given the operator stopped, and many pools applied while it was down
    operator_process.stop()
    try:
        documents = [_job_type("batch"), *(_pool(name, "batch") for name in sorted(names))]
        cluster.kubectl(
            "apply", "-n", ns, "-f", "-", input_text="\n---\n".join(yaml.safe_dump(d) for d in documents)
        )

        # When the operator starts
        started = time.monotonic()
        operator_process.start()

        # Then every pool becomes Ready
        eventually(
            lambda: _ready_pools(cluster, ns) == names,
            what=f"all {POOLS} pools Ready after the operator started",
            timeout=240,
            interval=2,
        )
        print(f"{POOLS} pools Ready {time.monotonic() - started:.1f}s after the operator started")
    finally:
        if not operator_process.running:
            operator_process.start()

    # When the operator restarts over pools that are all Ready
    time.sleep(3)
    before = len(cluster.audit_writes(user=OPERATOR_USER, namespace=ns))
    operator_process.stop()
    operator_process.start()
    time.sleep(15)

    # Then it catches up without a single write
    late = cluster.audit_writes(user=OPERATOR_USER, namespace=ns)[before:]
    assert late == [], [(write["verb"], write["objectRef"]) for write in late]
