"""The fault suite: real components fail under a running operator; each test asserts recovery and
prints how long it took (README, "Faults and recovery").

The cluster is shared by the whole session, so a test that stops a control-plane process brings it
back, healthy, before it ends, whatever happened in between.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devenv.cluster import Cluster
from devenv.servers import RedisServer
from devenv.waiting import eventually
from e2e.autoscaled_pools import (
    BACKLOG,
    POLLING_INTERVAL_SECONDS,
    TARGET_PER_REPLICA,
    RedisListBacklog,
    autoscaled_pool,
    pool_body,
    pool_condition,
    pool_replicas,
    resize_job_type,
)
from workerfleet.handlers.autoscaling import READ_TIMEOUT_SECONDS
from workerfleet.handlers.startup import REQUEST_TIMEOUT_SECONDS, WATCH_INACTIVITY_TIMEOUT_SECONDS
from workerfleet.planners.supervision import reading_lifetime_seconds

OUTAGE_SECONDS = 10
FREEZE_SECONDS = REQUEST_TIMEOUT_SECONDS + 10
"""Past the operator's request timeout, so requests sent into the freeze time out and their retries
(2 s apart) meet a server that still does not answer; a minute only repeated those retries."""
QUEUE_OUTAGE_SECONDS = 2 * reading_lifetime_seconds(POLLING_INTERVAL_SECONDS, READ_TIMEOUT_SECONDS)
"""How long the fallback is held with the queue server down: twice the longest bound it could run
out on, the life of a reading the metrics API serves (3 polls and a read timeout: 13 s at the 1 s
poll), itself past the supervised poller's backoff cap (4 s), the Redis client's reconnects and the
HPA's 5 s sync. A longer outage only repeats the same polls (two minutes took 136 s of every CI run)."""
REACHABLE_AGAIN_WITHIN_SECONDS = 10
"""Once Redis answers, the depth is read at the next 1 s poll (its shared client reconnecting) and
written: the 10 s the operator keeps for every reaction once a server answers again. A poller or a
client whose backoff grew through the outage fails here."""
RECOVERY_BOUND_SECONDS = 30
"""Generous for CI on 2 shared cores; the measured times are printed (and in the README)."""


def _measured(fault: str, what: str, seconds: float) -> None:
    print(f"\n[fault] {fault}: {what} {seconds:.1f}s after recovery")


def _answer(probe: Callable[[], Any]) -> Any:
    """`probe`'s result, or None while the API server does not answer (yet)."""
    try:
        return probe()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None


def _seconds_until(probe: Callable[[], Any], what: str, timeout: float = RECOVERY_BOUND_SECONDS) -> float:
    started = time.monotonic()
    eventually(lambda: _answer(probe), what=what, timeout=timeout, interval=0.25)
    return time.monotonic() - started


def _ready(cluster: Cluster, namespace: str, name: str, replicas: int) -> bool:
    body = pool_body(cluster, namespace, name)
    return (
        pool_condition(cluster, namespace, name, "Ready") == ("True", "WorkersReady")
        and (body.get("status") or {}).get("readyReplicas") == replicas
    )


def _plain_pool(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "jobTypes": ["resize"],
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
            # Workers would read it; the operator does not (no autoscaling).
            "queue": {"redis": {"address": "127.0.0.1:6379", "list": "jobs"}},
        },
    }


def _asleep(cluster: Cluster, namespace: str, backlog: RedisListBacklog) -> None:
    """An autoscaled pool at zero replicas over an empty queue, polled once a second."""
    cluster.apply(resize_job_type(), autoscaled_pool("thumbs", backlog.queue_spec), namespace=namespace)
    eventually(
        lambda: (
            pool_condition(cluster, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth")
        ),
        what="scaling on depth",
        timeout=60,
    )
    assert pool_replicas(cluster, namespace, "thumbs") == 0


@contextmanager
def _killed(cluster: Cluster, component: str) -> Iterator[None]:
    """`component` SIGKILLed for the block; started again (and healthy) when it ends, whatever happened."""
    cluster.kill(component)
    try:
        yield
    finally:
        cluster.restart(component)
        if component == "etcd":  # the API server's readiness follows etcd's
            eventually(lambda: cluster.is_healthy("kube-apiserver"), what="kube-apiserver ready", timeout=60)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_killed_control_plane_process_leaves_no_pool_asleep(
    operator: Cluster, namespace: str, redis_server: RedisServer, component: str
) -> None:
    # Given an autoscaled pool asleep at zero replicas
    backlog = RedisListBacklog(redis_server)
    _asleep(operator, namespace, backlog)

    # When the component is SIGKILLed, a burst of jobs arrives meanwhile, and it comes back after 10 s
    with _killed(operator, component):
        backlog.push(BACKLOG)
        time.sleep(OUTAGE_SECONDS)

    # Then the pool wakes, and the HPA takes it on to depth / target replicas
    woken = _seconds_until(lambda: pool_replicas(operator, namespace, "thumbs") >= 1, "the pool woken")
    _measured(component, "pool woken from zero", woken)
    target = BACKLOG // TARGET_PER_REPLICA
    scaled = _seconds_until(
        lambda: pool_replicas(operator, namespace, "thumbs") == target, f"{target} replicas", timeout=120
    )
    _measured(component, f"HPA at {target} replicas", woken + scaled)

    # And a pool applied now gets its workers at once, and becomes Ready once they are
    applied = time.monotonic()
    operator.apply(_plain_pool("late", 1), namespace=namespace)
    reconciled = _seconds_until(
        lambda: operator.kubectl("get", "deployment", "late", "-n", namespace), "the late pool's Deployment"
    )
    _measured(component, "pool applied after it reconciled (Deployment made)", reconciled)
    _seconds_until(lambda: _ready(operator, namespace, "late", 1), "the late pool Ready", timeout=120)
    _measured(component, "pool applied after it Ready", time.monotonic() - applied)
    backlog.drain()


def test_a_frozen_api_server_is_followed_again_once_it_thaws(operator: Cluster, namespace: str) -> None:
    # Given a pool at one ready replica
    operator.apply(resize_job_type(), _plain_pool("thumbs", 1), namespace=namespace)
    eventually(lambda: _ready(operator, namespace, "thumbs", 1), what="thumbs Ready", timeout=90)

    # When the API server is frozen (SIGSTOP) past the request timeout: connections open, nothing answers
    operator.freeze("kube-apiserver")
    try:
        time.sleep(FREEZE_SECONDS)
    finally:
        operator.thaw("kube-apiserver")
    try:
        _changes_after_a_freeze_are_followed(operator, namespace)
    finally:
        _revive_pods_marked_not_ready(operator)


def _changes_after_a_freeze_are_followed(operator: Cluster, namespace: str) -> None:

    # Then a change made after it is reconciled: the watch resumed
    thawed = time.monotonic()
    patch = '{"spec":{"replicas":2}}'
    eventually(
        lambda: _answer(
            lambda: operator.kubectl("patch", "wp", "thumbs", "-n", namespace, "--type=merge", "-p", patch)
        ),
        what="the patch accepted",
        timeout=RECOVERY_BOUND_SECONDS,
    )
    patched = time.monotonic()
    reconciled = _seconds_until(
        lambda: _deployment_replicas(operator, namespace, "thumbs") == 2, "the Deployment at 2 replicas"
    )
    _measured(
        "kube-apiserver frozen", "change after it reconciled (Deployment at 2)", patched - thawed + reconciled
    )
    # And the pool's status follows its Deployment again (the Deployment watch resumed too). Ready is
    # not waited for: the node leases ran out during the freeze, the node controller marked the pods
    # not ready, and kwok, unlike a kubelet, does not report them ready again.
    # A watch the freeze left silent is dropped after kopf's inactivity timeout at the latest.
    _seconds_until(
        lambda: _status_follows(operator, namespace, "thumbs", 2),
        "status.replicas 2",
        timeout=WATCH_INACTIVITY_TIMEOUT_SECONDS + RECOVERY_BOUND_SECONDS,
    )
    _measured("kube-apiserver frozen", "pool status following its Deployment", time.monotonic() - thawed)


def _revive_pods_marked_not_ready(cluster: Cluster) -> None:
    """Put the cluster back as the freeze found it, for the tests after this one: the node controller
    marked every pod not ready while the leases could not be renewed, and kwok never reports them ready
    again. Pods a controller owns are deleted, so their controllers make ready ones."""
    eventually(lambda: _all_nodes_ready(cluster), what="every node Ready again", timeout=60)
    pods = json.loads(cluster.kubectl("get", "pods", "--all-namespaces", "-o", "json").stdout)["items"]
    for pod in pods:
        ready = [c for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"]
        owned = any(owner.get("controller") for owner in pod["metadata"].get("ownerReferences") or [])
        if owned and ready and ready[0]["status"] != "True" and not pod["metadata"].get("deletionTimestamp"):
            namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", "--ignore-not-found")


def _all_nodes_ready(cluster: Cluster) -> bool:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or [])
        for node in nodes
    )


def _status_follows(cluster: Cluster, namespace: str, name: str, replicas: int) -> bool:
    body = pool_body(cluster, namespace, name)
    status = body.get("status") or {}
    return bool(
        status.get("replicas") == replicas
        and status.get("observedGeneration") == body["metadata"]["generation"]
    )


def _deployment_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    result = cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "jsonpath={.spec.replicas}")
    return int(result.stdout)


def test_a_queue_server_down_mid_burst_holds_the_fallback_then_scales_on_depth_again(
    operator: Cluster, namespace: str, own_redis: RedisServer
) -> None:
    # Given a pool scaling on a burst of jobs, with a fallback of 3 replicas after 2 failed reads
    backlog = RedisListBacklog(own_redis)
    fallback = {"failureThreshold": 2, "replicas": 3}
    operator.apply(
        resize_job_type(),
        autoscaled_pool("thumbs", backlog.queue_spec, replicas=1, minReplicas=1, fallback=fallback),
        namespace=namespace,
    )
    backlog.push(BACKLOG)
    target = BACKLOG // TARGET_PER_REPLICA
    eventually(
        lambda: pool_replicas(operator, namespace, "thumbs") == target, what=f"{target} replicas", timeout=120
    )

    # When the queue server stays down while the fallback is held for QUEUE_OUTAGE_SECONDS (26 s)
    own_redis.stop()
    try:
        # Then the pool says the queue is unreachable and holds the fallback replicas
        eventually(
            lambda: (
                pool_condition(operator, namespace, "thumbs", "QueueReachable")
                == ("False", "QueueUnreachable")
            ),
            what="QueueReachable=False",
            timeout=30,
        )
        eventually(
            lambda: pool_replicas(operator, namespace, "thumbs") == 3, what="3 fallback replicas", timeout=60
        )
        held_from = time.monotonic()
        remaining = QUEUE_OUTAGE_SECONDS - (time.monotonic() - held_from)
        while remaining > 0:
            assert pool_replicas(operator, namespace, "thumbs") == 3, "the fallback replicas were not held"
            time.sleep(min(2.0, remaining))
            remaining = QUEUE_OUTAGE_SECONDS - (time.monotonic() - held_from)
    finally:
        own_redis.start()  # same port, empty: jobs in memory went with the server

    # When it is back (empty) and jobs arrive again: Then the pool scales on depth again
    backlog.push(TARGET_PER_REPLICA * 5)
    reachable = _seconds_until(
        lambda: pool_condition(operator, namespace, "thumbs", "QueueReachable") == ("True", "DepthRead"),
        "QueueReachable=True",
        timeout=REACHABLE_AGAIN_WITHIN_SECONDS,
    )
    _measured("queue server down", "QueueReachable=True", reachable)
    assert pool_condition(operator, namespace, "thumbs", "Fallback") == ("False", "QueueReadable")
    scaled = _seconds_until(
        lambda: pool_replicas(operator, namespace, "thumbs") == 5, "5 replicas", timeout=120
    )
    _measured("queue server down", "scaling on depth again (5 replicas)", reachable + scaled)
