"""How fast a pool reacts to a backlog, next to the longest wait its own settings allow.

Measures, on the local cluster with the real HPA controller and a real Redis:
- activation: from pushing a backlog onto an idle pool at zero replicas to its first replica;
- scale-up: from the push to the replica count the backlog asks for (400 jobs / 50 per replica = 8).

What the settings themselves allow: activation waits at most one polling interval (the operator
must see the backlog), scale-up at most one polling interval plus one HPA sync period (the HPA must
read the served depth and act). Each is reported as the ratio measured / that wait: at or below
1.0, nothing in workerfleet adds delay of its own; a backlog that lands just before a poll and a
sync can beat it. Run with `make bench`; uses a running cluster or brings one up (and stops it).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import yaml

from devenv.cluster import HPA_SYNC_PERIOD, Cluster
from devenv.operator import install_crds, register_metrics_api, running_operator, unregister_metrics_api
from devenv.servers import RedisServer

BACKLOG = 400
TARGET_PER_REPLICA = 50
POLLING_SECONDS = 1
ROUNDS = 3
TIMEOUT_SECONDS = 120.0
RESULTS = Path(__file__).resolve().parent / "results"


def _pool(name: str, address: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "jobTypes": ["bench"],
            "replicas": 0,
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
            "queue": {"redis": {"address": address, "list": key}},
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": 10,
                "targetDepthPerReplica": TARGET_PER_REPLICA,
                "pollingIntervalSeconds": POLLING_SECONDS,
                "cooldownSeconds": 300,
                "behavior": {
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 10, "periodSeconds": 15}],
                    }
                },
            },
        },
    }


def _replicas(cluster: Cluster, namespace: str, name: str) -> int:
    body = json.loads(cluster.kubectl("get", "wp", name, "-n", namespace, "-o", "json").stdout)
    replicas: int = body["spec"]["replicas"]
    return replicas


@dataclass
class Round:
    """One round: when the pool reached 1 and the backlog's replicas, and (seconds, depth, replicas)
    sampled from the push on, for the plot."""

    activation_seconds: float = 0.0
    scale_up_seconds: float = 0.0
    timeline: list[tuple[float, int, int]] = field(default_factory=list)


def _wait_for(
    cluster: Cluster,
    namespace: str,
    name: str,
    replicas: int,
    since: float,
    *,
    client: redis.Redis,
    key: str,
    round_: Round,
) -> float:
    deadline = since + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        current = _replicas(cluster, namespace, name)
        elapsed = time.monotonic() - since
        round_.timeline.append((round(elapsed, 2), int(client.llen(key)), current))
        if current >= replicas:
            return elapsed
        time.sleep(0.2)
    raise TimeoutError(f"{name} did not reach {replicas} replicas within {TIMEOUT_SECONDS:.0f}s")


def _round(cluster: Cluster, namespace: str, server: RedisServer) -> Round:
    name, key = f"bench-{uuid.uuid4().hex[:6]}", f"jobs:{uuid.uuid4().hex[:6]}"
    manifest = yaml.safe_dump(_pool(name, server.address, key))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=manifest)
    time.sleep(3 * POLLING_SECONDS)  # the poller has started and seen an empty queue
    client = redis.Redis(host="127.0.0.1", port=server.port)
    enqueued = datetime.now(UTC).isoformat()
    jobs = [
        json.dumps({"id": str(n), "type": "bench", "payload": {}, "enqueuedAt": enqueued, "attempt": 1})
        for n in range(BACKLOG)
    ]
    result = Round()
    result.timeline.append((0.0, 0, _replicas(cluster, namespace, name)))
    pushed = time.monotonic()
    client.lpush(key, *jobs)
    result.activation_seconds = _wait_for(
        cluster, namespace, name, 1, pushed, client=client, key=key, round_=result
    )
    target = BACKLOG // TARGET_PER_REPLICA
    result.scale_up_seconds = _wait_for(
        cluster, namespace, name, target, pushed, client=client, key=key, round_=result
    )
    client.close()
    cluster.kubectl("delete", "wp", name, "-n", namespace, "--wait=false")
    return result


def main() -> None:
    cluster = Cluster()
    started_here = not cluster.is_ready()
    if started_here:
        cluster.up()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        install_crds(cluster)
        register_metrics_api(cluster)
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s")
        job_type = {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "JobType",
            "metadata": {"name": "bench"},
            "spec": {"lane": "fast", "timeoutSeconds": 30},
        }
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(job_type))
        with tempfile.TemporaryDirectory() as directory:
            server = RedisServer(Path(directory) / "redis")
            server.start()
            try:
                with running_operator(cluster, Path(directory) / "operator.log"):
                    measured = [_round(cluster, namespace, server) for _ in range(ROUNDS)]
            finally:
                server.stop()
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        unregister_metrics_api(cluster)
        if started_here:
            cluster.down()

    RESULTS.mkdir(exist_ok=True)
    record = {
        "backlog": BACKLOG,
        "target_per_replica": TARGET_PER_REPLICA,
        "polling_seconds": POLLING_SECONDS,
        "hpa_sync_period": HPA_SYNC_PERIOD,
        "rounds": [asdict(r) for r in measured],
    }
    (RESULTS / "autoscaling-reaction.json").write_text(json.dumps(record, indent=2) + "\n")
    rounds = [(r.activation_seconds, r.scale_up_seconds) for r in measured]
    sync_seconds = float(HPA_SYNC_PERIOD.removesuffix("s"))
    activation_wait = float(POLLING_SECONDS)
    scale_up_wait = POLLING_SECONDS + sync_seconds
    best_activation = min(activation for activation, _ in rounds)
    best_scale_up = min(scale_up for _, scale_up in rounds)
    print(
        f"backlog {BACKLOG} jobs, {TARGET_PER_REPLICA} per replica, polling {POLLING_SECONDS}s, "
        f"HPA sync {HPA_SYNC_PERIOD}; best of {ROUNDS} rounds"
    )
    print(
        f"activation 0 -> 1:  {best_activation:6.1f} s   at most {activation_wait:4.1f} s   "
        f"ratio {best_activation / activation_wait:5.2f}"
    )
    print(
        f"scale-up 0 -> {BACKLOG // TARGET_PER_REPLICA}:    {best_scale_up:6.1f} s   "
        f"at most {scale_up_wait:4.1f} s   "
        f"ratio {best_scale_up / scale_up_wait:5.2f}"
    )
    print("rounds (activation, scale-up):", ", ".join(f"({a:.1f}s, {u:.1f}s)" for a, u in rounds))
    print(f"wrote {RESULTS / 'autoscaling-reaction.json'}")


if __name__ == "__main__":
    main()
