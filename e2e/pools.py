"""The JobType and WorkerPool manifests the e2e tests apply, and the Ready check they wait on."""

from __future__ import annotations

from typing import Any

from devenv.cluster import Cluster


def job_type(name: str, permissions: list[dict[str, Any]] | None = None, timeout: int = 30) -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": name},
        "spec": {"lane": "fast", "timeoutSeconds": timeout, "permissions": permissions or []},
    }


def pool(
    name: str, job_types: list[str], replicas: int = 1, queue: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """A pool of `worker:1` pods on a Redis list of its own (by default, at an address nobody serves)."""
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "jobTypes": job_types,
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
            "queue": queue or {"redis": {"address": "127.0.0.1:6379", "list": f"jobs:{name}"}},
            **spec,
        },
    }


def ready(cluster: Cluster, namespace: str, name: str, replicas: int | None = None) -> bool:
    """The pool is Ready (WorkersReady), and when `replicas` is given, with that many ready workers."""
    status = (cluster.get(f"workerpool/{name}", namespace=namespace) or {}).get("status") or {}
    ready_reasons = [
        (condition["status"], condition["reason"])
        for condition in status.get("conditions") or []
        if condition["type"] == "Ready"
    ]
    if ready_reasons != [("True", "WorkersReady")]:
        return False
    return replicas is None or status.get("readyReplicas") == replicas
