"""Fleet safety against the real cluster, a real Redis and real worker processes at the pods' IPs:
the circuit breaker trips on a failing downstream, holds replicas, probes and closes; scale-in removes
idle workers first once the operator sets their pod-deletion-cost.

The operator reads the workers' own metrics ports (no Prometheus); `PodWorkers` stands in for the
kubelet (pods on kwok run nothing, see devenv/loopback.py), the pods on a node whose pod IPs are on
loopback.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from devenv.cluster import Cluster
from devenv.loopback import PodWorkers, on_loopback_node
from devenv.servers import RedisServer, free_port
from devenv.waiting import eventually
from e2e.autoscaled_pools import event_reasons, pool_body, pool_condition
from workerfleet.planners.breaker import DELETION_COST_ANNOTATION, BreakerReason
from workerfleet.worker.envelope import encode, new_envelope

SYNC_SECONDS = 0.3
HANDLERS = "e2e.fleet_handlers"
REFUSED = 20
SCRAPE_SECONDS = 2.0
"""How often the operator reads the workers of a breaker with a 10 s window."""
LONG_JOB_SECONDS = 90
OLDEST_HEAD_START_SECONDS = 8.0


def job_type(max_attempts: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "work"},
        "spec": {
            "lane": "fast",
            "timeoutSeconds": 120,
            "retry": {
                "maxAttempts": max_attempts,
                "backoff": {"initialSeconds": 0.2, "maxSeconds": 0.5, "multiplier": 1},
            },
            "deadLetter": {"queue": "work.dlq"},
        },
    }


def pool(
    name: str, redis_address: str, queue: str, port: int, env: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    container = {
        "name": "worker",
        "image": "worker:1",
        "env": [{"name": key, "value": value} for key, value in (env or {}).items()],
    }
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "jobTypes": ["work"],
            "template": {"spec": {"containers": [container]}},
            "queue": {"redis": {"address": redis_address, "list": queue}},
            **spec,
            "worker": {"port": port, **spec.get("worker", {})},
        },
    }


def push(server: RedisServer, queue: str, count: int, seconds: float, **payload: Any) -> None:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    body = {"seconds": seconds, **payload}
    client.lpush(queue, *(encode(new_envelope("work", body, now=datetime.now(UTC))) for _ in range(count)))


@contextmanager
def following(workers: PodWorkers) -> Iterator[None]:
    """Keep the worker processes in step with the pods (and their ConfigMap) in the background."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(SYNC_SECONDS):
            workers.sync()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.fixture
def pods_on_loopback(operator: Cluster) -> Iterator[None]:
    with on_loopback_node(operator):
        yield


def event_messages(cluster: Cluster, namespace: str, name: str, reason: str) -> list[str]:
    selector = f"involvedObject.name={name},reason={reason}"
    events = cluster.get("events", "--field-selector", selector, namespace=namespace) or {}
    return [event["message"] for event in events.get("items") or []]


def scale(cluster: Cluster, namespace: str, name: str, replicas: int) -> None:
    cluster.kubectl("scale", f"workerpool/{name}", f"--replicas={replicas}", "-n", namespace)


def ready_pods(workers: PodWorkers, count: int) -> dict[str, dict[str, Any]]:
    def counted() -> dict[str, dict[str, Any]] | None:
        pods = workers.pods()
        return pods if len(pods) == count else None

    return eventually(counted, what=f"{count} ready pods", timeout=60)


def serving(workers: PodWorkers) -> bool:
    try:
        workers.in_flight()
    except OSError:
        return False
    return True


def interrupted_by_scale_in(
    cluster: Cluster, namespace: str, redis_server: RedisServer, directory: Path, *, spare: bool
) -> int:
    """Six workers, the four newest busy with long jobs and the two oldest idle; scaled in to four:
    the jobs held by the workers whose pods the ReplicaSet removed."""
    name = f"pool-{uuid.uuid4().hex[:6]}"
    queue, port = f"jobs-{name}", free_port()
    manifest = pool(
        name,
        redis_server.address,
        queue,
        port,
        env={"WORKERFLEET_CONCURRENCY": "1"},
        replicas=2,
        worker={"spareBusyWorkers": spare},
    )
    cluster.apply(job_type(), manifest, namespace=namespace)
    workers = PodWorkers(cluster, namespace, name, port, directory / name, {}, HANDLERS)
    try:
        oldest = set(ready_pods(workers, 2))
        # The ReplicaSet compares how long pods have been ready on a log2 scale: the oldest pods'
        # time must be at least double the newest ones' at the scale-in, or the order is left to UIDs.
        time.sleep(OLDEST_HEAD_START_SECONDS)
        scale(cluster, namespace, name, 6)
        newest = set(ready_pods(workers, 6)) - oldest
        workers.sync(only=newest)
        eventually(lambda: serving(workers), what="the newest workers to serve", timeout=30)
        push(redis_server, queue, 4, LONG_JOB_SECONDS)
        eventually(lambda: sum(workers.in_flight().values()) == 4, what="4 busy workers", timeout=30)
        workers.sync()
        eventually(lambda: len(workers.workers) == 6 and serving(workers), what="6 workers", timeout=30)
        busy = {pod for pod, held in workers.in_flight().items() if held}
        assert busy == newest, "the newest pods hold the jobs"
        if spare:

            def costs_written() -> bool:
                pods = workers.pods()
                costs = {
                    pod: (body["metadata"].get("annotations") or {}).get(DELETION_COST_ANNOTATION)
                    for pod, body in pods.items()
                }
                return all(costs[pod] == ("1" if pod in busy else "0") for pod in pods)

            eventually(costs_written, what="each pod's deletion cost", timeout=30)
        with following(workers):
            scale(cluster, namespace, name, 4)
            eventually(lambda: len(workers.workers) == 4, what="the scale-in to 4", timeout=30)
        return workers.interrupted
    finally:
        workers.stop_all()
        cluster.kubectl("delete", "workerpool", name, "-n", namespace, "--wait=false", check=False)


@pytest.mark.usefixtures("pods_on_loopback")
def test_scale_in_removes_idle_workers_first_with_deletion_costs(
    operator: Cluster, namespace: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    # One node, too: the ReplicaSet removes pods on crowded nodes first, which would blur the comparison.
    without = interrupted_by_scale_in(operator, namespace, redis_server, tmp_path, spare=False)
    with_costs = interrupted_by_scale_in(operator, namespace, redis_server, tmp_path, spare=True)
    print(f"jobs interrupted by one scale-in 6 -> 4: {without} without deletion costs, {with_costs} with")
    assert without >= 1, "without costs the ReplicaSet removes the newest pods, here the busy ones"
    assert with_costs <= without / 2, f"with deletion costs {with_costs} jobs were cut off, without {without}"
    assert with_costs == 0


def flood_of_an_ignored_class_leaves_the_breaker_closed(
    cluster: Cluster, namespace: str, name: str, *, queue: str, workers: PodWorkers, server: RedisServer
) -> None:
    # Given a flood of jobs the downstream refuses (class policy, which the breaker ignores)
    push(server, queue, REFUSED, 0.0, refused=True)
    eventually(lambda: workers.outcomes().get("dead_lettered", 0) == REFUSED, what="the refusals", timeout=15)
    # Then the breaker, having judged them, stays closed
    for _ in range(3):
        threading.Event().wait(SCRAPE_SECONDS)
        assert pool_condition(cluster, namespace, name, "CircuitOpen") == ("False", BreakerReason.CLOSED)
    judged = pool_body(cluster, namespace, name)["status"]["circuitBreaker"]
    assert judged["samples"] >= 10, f"the breaker judged the refusals: {judged}"


@pytest.mark.usefixtures("pods_on_loopback")
def test_breaker_trips_on_its_failure_class_holds_replicas_and_a_probe_closes_it(
    operator: Cluster, namespace: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    name, port = "guarded", free_port()
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    broken = tmp_path / "downstream-broken"
    broken.touch()
    breaker = {
        "maxFailureRatio": 0.5,
        "minSamples": 10,
        "windowSeconds": 10,
        "coolDownSeconds": 10,
        "probeJobs": 3,
        "failureClasses": [
            {"class": "transient", "maxFailureRatio": 0.5},
            {"class": "policy", "trips": False},
        ],
    }
    autoscaling = {
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetDepthPerReplica": 20,
        "pollingIntervalSeconds": 1,
        "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0}},
    }
    manifest = pool(name, redis_server.address, queue, port, circuitBreaker=breaker, autoscaling=autoscaling)
    operator.apply(job_type(max_attempts=50), manifest, namespace=namespace)
    workers = PodWorkers(
        operator, namespace, name, port, tmp_path / "workers", {"FLEET_FAIL_WHILE": str(broken)}, HANDLERS
    )
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        ready_pods(workers, 2)
        with following(workers):
            eventually(lambda: len(workers.workers) == 2 and serving(workers), what="2 workers", timeout=30)
            flood_of_an_ignored_class_leaves_the_breaker_closed(
                operator, namespace, name, queue=queue, workers=workers, server=redis_server
            )
            # Given a downstream that fails every job (class transient)
            broke_at = time.monotonic()
            push(redis_server, queue, 20, 0.05)
            # Then the breaker trips within its window, with the measured ratio
            eventually(
                lambda: (
                    pool_condition(operator, namespace, name, "CircuitOpen")
                    == ("True", BreakerReason.TRIPPED)
                ),
                what="CircuitOpen=True",
                timeout=30,
            )
            tripped_after = time.monotonic() - broke_at
            status = pool_body(operator, namespace, name)["status"]
            assert status["circuitBreaker"]["failureRatio"] >= 0.5
            assert status["circuitBreaker"]["failureClass"] == "transient"
            [open_condition] = [c for c in status["conditions"] if c["type"] == "CircuitOpen"]
            assert open_condition["message"].startswith("transient failures: "), open_condition
            tripped = event_messages(operator, namespace, name, BreakerReason.TRIPPED)
            assert any(message.startswith("transient failures: ") for message in tripped), tripped
            # While open: a backlog that would ask for all 6 replicas; the workers take nothing, replicas hold
            push(redis_server, queue, 200, 0.05)
            eventually(
                lambda: (
                    pool_condition(operator, namespace, name, "ScalingActive") == ("False", "CircuitOpen")
                ),
                what="autoscaling held by the breaker",
                timeout=15,
            )
            eventually(lambda: serving(workers), what="the workers", timeout=5)
            threading.Event().wait(2.0)  # the workers read the open state (ConfigMap sync, 1 s reads)
            before = workers.outcomes()
            for _ in range(6):
                assert pool_body(operator, namespace, name)["spec"]["replicas"] == 2, (
                    "replicas hold while open"
                )
                threading.Event().wait(0.5)
            assert pool_body(operator, namespace, name)["status"]["circuitBreaker"]["state"] == "Open"
            assert workers.outcomes() == before, "no job is taken while open"
            # When the downstream recovers, the probe after the cool-down closes the breaker
            broken.unlink()
            mended_at = time.monotonic()
            eventually(
                lambda: (
                    pool_condition(operator, namespace, name, "CircuitOpen")
                    == ("False", BreakerReason.CLOSED)
                ),
                what="the probe to close the breaker",
                timeout=40,
            )
            print(
                f"breaker tripped {tripped_after:.1f} s after the downstream broke (window 10 s), closed"
                f" {time.monotonic() - mended_at:.1f} s after it was mended (cool-down 10 s, 3 probe jobs)"
            )
            reasons = event_reasons(operator, namespace, name)
            assert BreakerReason.PROBING in reasons
            assert BreakerReason.CLOSED in reasons
            assert client.llen("work.dlq") == REFUSED, "no job but the refused ones was dead-lettered"
            assert workers.outcomes().get("dead_lettered", 0) == REFUSED
    finally:
        workers.stop_all()
        client.close()


@pytest.mark.usefixtures("pods_on_loopback")
def test_a_rate_limit_holds_across_workers_and_the_hpa_stops_where_it_binds(
    operator: Cluster, namespace: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Workers run 2 jobs of 0.25 s at once: 8 jobs/s each, so a limit of 20 jobs/s keeps 3 busy.
    name, port = "limited", free_port()
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    limited = job_type()
    limited["spec"]["rateLimit"] = {"jobsPerSecond": 20}
    autoscaling = {
        "minReplicas": 1,
        "maxReplicas": 8,
        "targetDepthPerReplica": 10,
        "pollingIntervalSeconds": 1,
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 8, "periodSeconds": 5}],
            }
        },
    }
    manifest = pool(
        name, redis_server.address, queue, port, env={"WORKERFLEET_CONCURRENCY": "2"}, autoscaling=autoscaling
    )
    operator.apply(limited, manifest, namespace=namespace)
    workers = PodWorkers(operator, namespace, name, port, tmp_path / "workers", {}, HANDLERS)
    try:
        ready_pods(workers, 1)
        with following(workers):
            eventually(
                lambda: len(workers.workers) == 1 and serving(workers), what="the first worker", timeout=30
            )
            # A few jobs first, fewer than one replica's target: the operator measures what a worker runs
            push(redis_server, queue, 8, 0.25)
            eventually(lambda: workers.outcomes().get("succeeded", 0) >= 8, what="the first jobs", timeout=30)
            time.sleep(6.0)  # a scrape (every 5 s) after them
            # Then a backlog that alone would ask for all 8 replicas
            push(redis_server, queue, 1_000, 0.25)
            eventually(
                lambda: pool_condition(operator, namespace, name, "ScalingActive") == ("True", "RateLimited"),
                what="the rate limit to bind the autoscaler",
                timeout=30,
            )

            def scaling_message() -> str:
                conditions = pool_body(operator, namespace, name)["status"]["conditions"]
                return str([c["message"] for c in conditions if c["type"] == "ScalingActive"])

            eventually(
                lambda: len(workers.workers) == 3 and serving(workers),
                what=f"3 workers ({scaling_message()})",
                timeout=30,
            )
            highest = 0
            before, started = workers.outcomes().get("succeeded", 0), time.monotonic()
            for _ in range(12):
                highest = max(highest, pool_body(operator, namespace, name)["spec"]["replicas"])
                time.sleep(0.5)
            rate = (workers.outcomes().get("succeeded", 0) - before) / (time.monotonic() - started)
            print(f"rate limit 20 jobs/s across 3 workers: {rate:.1f} jobs/s; replicas stopped at {highest}")
            assert highest == 3, "the HPA stops at the replicas the limit keeps busy (3 of 8)"
            assert abs(rate - 20) <= 2, f"{rate:.1f} jobs/s against a limit of 20"
    finally:
        workers.stop_all()
