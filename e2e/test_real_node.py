"""The product on a real kubelet: the images built here, run by containerd and runc on the real node.

Everything else in the suite runs the operator and workers as host processes beside kwok's
simulated pods. Here the operator is the chart installed with the built image: its pods start under
the chart's securityContext in a `restricted` namespace, call the API server with their projected
token, are probed by the kubelet, and hand over when the active one is deleted. Its workers are the
demo worker image consuming a real Redis list through the node's network, and the kubelet's
SIGTERM at scale-in drains them without losing a job.

The times measured (cold start, hand-over, drain) are printed; README "What runs where" quotes them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import redis

from devenv import chart, images, node
from devenv.cluster import Cluster
from devenv.operator import OperatorProcess
from devenv.producer import SteadyProducer
from devenv.prometheus import PrometheusServer
from devenv.servers import RedisServer
from devenv.waiting import eventually
from e2e.autoscaled_pools import autoscaled_pool, envelope, pool_condition, pool_replicas, served_depth
from e2e.canary_rig import JOB_TYPE as CANARY_JOB_TYPE
from e2e.canary_rig import analysis, demo_job_type
from e2e.pools import job_type

RELEASE = "wf-real"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
ON_THE_REAL_NODE = {
    "nodeSelector": {node.NODE_LABEL: "true"},
    "tolerations": [{"key": node.TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
}
COLD_START_BOUND = 90.0
"""helm install to both operator pods Ready: image already on the node, Python starting on 2 cores."""
HANDOVER_BOUND = 15.0
"""A deleted active pod removes its peering record on SIGTERM; the standby sees it within its 2 s
check (README: a graceful stop hands over in seconds). Margin for a loaded 2-core machine."""
WORKER_GRACE_SECONDS = 30
"""The pod's terminationGracePeriodSeconds: a drain that ends later is cut off by SIGKILL."""
JOBS = 30
JOB_SECONDS = 1.0
METRICS_PORT = 9090
PROBES_PORT = 8080


@dataclass(frozen=True)
class OperatorRelease:
    namespace: str
    cold_start_seconds: float


@pytest.fixture(scope="module")
def real_node(cluster: Cluster) -> Iterator[Cluster]:
    """The real node Ready, with the images of this checkout imported. A node this module started is
    stopped after it, so the rest of the suite meets the cluster it always did."""
    was_running = node.is_running(cluster.layout.root)
    cluster.start_real_node()
    if was_running:
        node.import_images(cluster.layout.root)
    yield cluster
    if not was_running:
        cluster.stop_real_node()


@pytest.fixture(scope="module")
def metrics_api_free(real_node: Cluster, request: pytest.FixtureRequest) -> Iterator[None]:
    """The external metrics APIService is one per cluster: while this module's operator pods serve it,
    the suite's host-process operator (when it runs and holds the APIService) is stopped, and it is
    started again afterwards."""
    held = real_node.get("apiservice", API_SERVICE)
    if held is None:
        yield
        return
    suite_operator: OperatorProcess = request.getfixturevalue("operator_process")
    suite_operator.stop()
    eventually(
        lambda: real_node.get("apiservice", API_SERVICE) is None,
        what="the suite operator's APIService removed",
        timeout=30,
    )
    try:
        yield
    finally:
        suite_operator.start()


@pytest.fixture(scope="module")
def operator_release(real_node: Cluster, metrics_api_free: None) -> Iterator[OperatorRelease]:
    """The chart installed with the built image on the real node, watching its own namespace only
    (the rest of the suite's operator watches everything; this one must not meet its pools), serving
    the external metrics API to the API server's aggregator."""
    namespace = f"real-{uuid.uuid4().hex[:6]}"
    values: dict[str, Any] = {
        "image": {"pullPolicy": "Never"},
        "replicaCount": 2,
        "watchNamespaces": [namespace],
        # Scraped by this test from inside the node's network, to read which replica is active.
        "metrics": {"address": "0.0.0.0"},  # noqa: S104  (the pod network of the real node only)
        "networkPolicy": {
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
            ]
        },
        "admission": chart.REAL_NODE_PLACEMENT,
        **ON_THE_REAL_NODE,
    }
    started = time.monotonic()
    chart.install(real_node, values, release=RELEASE, namespace=namespace)
    cold_start = time.monotonic() - started
    print(f"\noperator cold start on the real node (helm install to both pods Ready): {cold_start:.1f}s")
    # A pool waiting from the start, for the first reconcile (its queue's address answers nothing)
    real_node.apply(
        job_type("resize"),
        _worker_pool("first", f"{node.NODE_IP}:1", "first", replicas=0),
        namespace=namespace,
    )
    eventually(lambda: _active(real_node, namespace), what="an active operator replica", timeout=120)
    print(f"operator cold start to one replica active: {time.monotonic() - started:.1f}s")
    first_reconcile = eventually(
        lambda: _first_condition_at(real_node, namespace, "first"),
        what="the first pool reconciled",
        timeout=60,
    )
    process_start = min(_container_started_at(pod) for pod in _operator_pods(real_node, namespace))
    to_reconcile = (first_reconcile - process_start).total_seconds()
    print(f"operator process start to its first pool reconciled: {to_reconcile:.0f}s")
    real_node.kubectl("delete", "workerpool", "first", "-n", namespace, "--wait=false")
    try:
        yield OperatorRelease(namespace, cold_start)
    finally:
        # The operator pods stop first, while their ServiceAccount still exists: uninstalling deletes
        # it at once, and a replica still stopping would retry its peering cleanup on 401s.
        selector = f"app.kubernetes.io/instance={RELEASE}"
        real_node.kubectl("scale", "deployment", "-l", selector, "-n", namespace, "--replicas=0")
        real_node.kubectl("wait", "--for=delete", "pod", "-l", selector, "-n", namespace, "--timeout=60s")
        chart.uninstall(real_node, release=RELEASE, namespace=namespace)
        real_node.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _first_condition_at(cluster: Cluster, namespace: str, pool: str) -> datetime | None:
    """When the operator first wrote a condition of the pool (the API's second resolution)."""
    body = cluster.get(f"workerpool/{pool}", namespace=namespace) or {}
    times = [c["lastTransitionTime"] for c in (body.get("status") or {}).get("conditions") or []]
    return min(datetime.fromisoformat(t) for t in times) if times else None


def _container_started_at(pod: dict[str, Any]) -> datetime:
    [status] = pod["status"]["containerStatuses"]
    return datetime.fromisoformat(status["state"]["running"]["startedAt"])


def _pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    body = cluster.get("pods", "-l", selector, namespace=namespace) or {"items": []}
    return [pod for pod in body["items"] if not pod["metadata"].get("deletionTimestamp")]


def _operator_pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return _pods(cluster, namespace, f"app.kubernetes.io/instance={RELEASE}")


def _is_active(pod: dict[str, Any]) -> bool | None:
    """The replica's own workerfleet_operator_active gauge, read over the pod network."""
    if not pod["status"].get("podIP"):
        return None
    try:
        status, text = node.http_get((pod["status"]["podIP"], METRICS_PORT), "/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    values = [
        line.split()[1] for line in text.splitlines() if line.startswith("workerfleet_operator_active ")
    ]
    return values == ["1.0"]


def _active(cluster: Cluster, namespace: str) -> list[str]:
    return [pod["metadata"]["name"] for pod in _operator_pods(cluster, namespace) if _is_active(pod)]


def _container_id(pod: dict[str, Any]) -> str:
    [status] = pod["status"]["containerStatuses"]
    return str(status["containerID"]).removeprefix("containerd://")


def test_the_operator_image_runs_under_the_charts_security_context_and_a_standby_takes_over(
    real_node: Cluster, operator_release: OperatorRelease
) -> None:
    # Given the chart installed with the image built here, on the real node, in a restricted namespace
    namespace = operator_release.namespace
    taints = real_node.get(f"node/{node.NODE_NAME}")["spec"]["taints"]
    assert {"key": node.TAINT_KEY, "value": "true", "effect": "NoSchedule"} in taints, "kwok's pods stay off"
    pods = _operator_pods(real_node, namespace)
    assert len(pods) == 2
    assert {pod["spec"]["nodeName"] for pod in pods} == {node.NODE_NAME}
    assert operator_release.cold_start_seconds < COLD_START_BOUND

    # Then each container runs as the chart's non-root user on a read-only root filesystem
    for pod in pods:
        process = node.container_process(real_node.layout.root, _container_id(pod))
        assert process.uid == 65532, pod["metadata"]["name"]
        assert process.root_read_only, pod["metadata"]["name"]
        # and `restricted` holds at runtime: no capabilities, no privilege gain, a seccomp filter
        assert process.effective_capabilities == 0, pod["metadata"]["name"]
        assert process.no_new_privileges, pod["metadata"]["name"]
        assert process.seccomp_filtered, pod["metadata"]["name"]
        # and answers the kubelet's probes on its probes port
        assert node.http_get((pod["status"]["podIP"], PROBES_PORT), "/healthz")[0] == 200
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"

    # And exactly one replica is active, having authenticated with its pod-bound projected token
    active = eventually(lambda: _active(real_node, namespace), what="an active operator replica", timeout=30)
    assert len(active) == 1
    bound_pods = {
        extra[0]
        for event in real_node.audit_writes(namespace=namespace)
        if event["user"]["username"].startswith(f"system:serviceaccount:{namespace}:")
        and (extra := event["user"].get("extra", {}).get("authentication.kubernetes.io/pod-name"))
    }
    assert active[0] in bound_pods, f"writes by the operator's token carry pod names {bound_pods}"

    # When the active pod is deleted
    [standby] = [pod["metadata"]["name"] for pod in pods if pod["metadata"]["name"] != active[0]]
    started = time.monotonic()
    real_node.kubectl("delete", "pod", active[0], "-n", namespace, "--wait=false")

    # Then the standby is active within the bound
    eventually(lambda: _active(real_node, namespace) == [standby], what=f"{standby} active", timeout=60)
    handover = time.monotonic() - started
    print(f"\nhand-over after deleting the active operator pod: {handover:.1f}s")
    assert handover < HANDOVER_BOUND


def _keyed_envelope(number: int) -> str:
    """A `resize` job whose payload carries its id, the JobType's idempotency key: a completed job
    leaves `<list>:done:resize:<id>` behind, the ledger this test reads."""
    job = json.loads(envelope(number))
    return json.dumps({**job, "payload": {"id": job["id"]}})


def _worker_pool(name: str, address: str, key: str, replicas: int) -> dict[str, Any]:
    container = {
        "name": "worker",
        "image": images.image_reference("demo-worker").removeprefix("docker.io/"),
        "imagePullPolicy": "Never",
        "env": [
            {"name": "WORKERFLEET_DEMO_JOB_TYPES", "value": "resize"},
            {"name": "WORKERFLEET_DEMO_DURATION_SECONDS", "value": str(JOB_SECONDS)},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "jobTypes": ["resize"],
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [container],
                    "terminationGracePeriodSeconds": WORKER_GRACE_SECONDS,
                    **ON_THE_REAL_NODE,
                }
            },
            "queue": {"redis": {"address": address, "list": key}},
        },
    }


def test_real_worker_containers_consume_a_real_queue_and_drain_on_the_kubelets_sigterm(
    real_node: Cluster, operator_release: OperatorRelease, redis_server: RedisServer
) -> None:
    # Given Redis on the host's loopback, reachable from the node's pods, and a backlog of jobs
    namespace = operator_release.namespace
    key = f"jobs:{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    client.lpush(key, *(_keyed_envelope(number) for number in range(JOBS)))
    with node.forwarded(real_node.layout.root, redis_server.port, redis_server.port) as address:
        # When a pool of two demo-worker containers runs on the real node
        real_node.apply(
            {**job_type("resize"), "spec": {**job_type("resize")["spec"], "idempotency": {"keyField": "id"}}},
            namespace=namespace,
        )
        real_node.apply(_worker_pool("real", address, key, replicas=2), namespace=namespace)
        selector = "workerfleet.dev/pool=real"
        eventually(
            lambda: [
                pod
                for pod in _pods(real_node, namespace, selector)
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in pod["status"].get("conditions", [])
                )
            ][1:],
            what="two ready worker pods",
            timeout=90,
        )
        workers = _pods(real_node, namespace, selector)
        assert {pod["spec"]["nodeName"] for pod in workers} == {node.NODE_NAME}
        for pod in workers:
            process = node.container_process(real_node.layout.root, _container_id(pod))
            assert process.uid != 0
            assert process.root_read_only
            assert process.effective_capabilities == 0
            assert process.no_new_privileges
            assert process.seccomp_filtered
        eventually(lambda: client.llen(key) < JOBS - 4, what="jobs taken by the workers", timeout=60)

        # And the pool is scaled in while both hold jobs: the kubelet sends one SIGTERM
        started = time.monotonic()
        real_node.kubectl(
            "patch",
            "workerpool",
            "real",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"replicas": 1}}),
        )
        eventually(
            lambda: len(real_node.get("pods", "-l", selector, namespace=namespace)["items"]) == 1,
            what="the scaled-in worker pod gone",
            timeout=WORKER_GRACE_SECONDS + 30,
        )
        drain = time.monotonic() - started

        # Then it drained and exited before the grace period ran out, and no job is lost
        print(f"\nworker scale-in (patch to pod gone, SIGTERM drain included): {drain:.1f}s")
        assert drain < WORKER_GRACE_SECONDS
        eventually(
            lambda: client.llen(key) == 0 and not client.keys(f"{key}:processing:*"),
            what="every job taken and none left in a processing list",
            timeout=JOBS * JOB_SECONDS + 60,
        )
    done = client.keys(f"{key}:done:*")
    dead = client.llen(f"{key}:dead") if client.exists(f"{key}:dead") else 0
    assert len(done) == JOBS, f"{len(done)} of {JOBS} jobs completed, {dead} dead-lettered"


BURST = 30
BURST_PER_REPLICA = 10
BURST_MAX_REPLICAS = 3
METRICS_API_SERVICE = f"{RELEASE}-workerfleet-metrics-api"


def _api_service_backend(cluster: Cluster, namespace: str) -> list[str]:
    """The pod addresses the aggregator reaches: the APIService Available and routed to the release's
    Service, and that Service's ready endpoints."""
    body = cluster.get("apiservice", API_SERVICE) or {}
    service = (body.get("spec") or {}).get("service") or {}
    available = any(
        c["type"] == "Available" and c["status"] == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )
    if not available or (service.get("namespace"), service.get("name")) != (namespace, METRICS_API_SERVICE):
        return []
    slices = cluster.get(
        "endpointslices", "-l", f"kubernetes.io/service-name={METRICS_API_SERVICE}", namespace=namespace
    )
    return sorted(
        address
        for item in (slices or {"items": []})["items"]
        for endpoint in item.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint["addresses"]
    )


def _ready_workers(cluster: Cluster, namespace: str, pool: str) -> int:
    return sum(_is_ready(pod) for pod in _pods(cluster, namespace, f"workerfleet.dev/pool={pool}"))


def test_a_burst_scales_real_worker_containers_through_the_metrics_api_served_from_the_operator_pod(
    real_node: Cluster, operator_release: OperatorRelease, redis_server: RedisServer
) -> None:
    # Given the aggregator routed to the release's Service, whose one endpoint is the active operator pod
    namespace = operator_release.namespace
    active = eventually(lambda: _active(real_node, namespace), what="an active operator replica", timeout=60)
    [active_ip] = [
        pod["status"]["podIP"]
        for pod in _operator_pods(real_node, namespace)
        if pod["metadata"]["name"] in active
    ]
    backends = eventually(
        lambda: _api_service_backend(real_node, namespace),
        what="the APIService Available, routed to the operator pod",
        timeout=60,
    )
    assert backends == [active_ip]

    # And an autoscaled pool of demo-worker containers on the real node, at zero, over a real Redis list
    key = f"burst:{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    with node.forwarded(real_node.layout.root, redis_server.port, redis_server.port) as address:
        pool = _worker_pool("burst", address, key, replicas=0)
        pool["spec"]["autoscaling"] = autoscaled_pool("burst", {}, maxReplicas=BURST_MAX_REPLICAS)["spec"][
            "autoscaling"
        ] | {"targetDepthPerReplica": BURST_PER_REPLICA}
        real_node.apply(job_type("resize"), pool, namespace=namespace)
        eventually(
            lambda: pool_condition(real_node, namespace, "burst", "QueueReachable") == ("True", "DepthRead"),
            what="the in-pod operator reading the queue",
            timeout=60,
        )

        # When a burst of jobs arrives
        started = time.monotonic()
        client.lpush(key, *(envelope(number) for number in range(BURST)))

        # Then the operator pod serves its depth through the aggregator
        served = eventually(
            lambda: served_depth(real_node, namespace, "burst"), what="the depth served", timeout=30
        )
        assert 0 < served <= BURST

        # And the HPA scales the pool up to real worker containers, ready on the real node
        eventually(
            lambda: _ready_workers(real_node, namespace, "burst") >= 2,
            what="worker containers scaled up by the HPA",
            timeout=90,
            interval=1,
        )
        print(f"\nburst of {BURST} jobs to two ready worker containers: {time.monotonic() - started:.1f}s")
        rescales = real_node.get("events", "--field-selector=reason=SuccessfulRescale", namespace=namespace)
        sizes = [
            int(size)
            for event in rescales["items"]
            for size in re.findall(r"New size: (\d+)", event["message"])
        ]
        assert max(sizes, default=0) > 1, "the HPA (not the operator's 0 -> 1) scaled the pool up"

        # And once the workers have taken every job, back to zero
        eventually(lambda: client.llen(key) == 0, what="the burst consumed", timeout=90, interval=1)
        eventually(
            lambda: (
                pool_replicas(real_node, namespace, "burst") == 0
                and not _pods(real_node, namespace, "workerfleet.dev/pool=burst")
            ),
            what="the pool back to zero, its containers gone",
            timeout=90,
            interval=1,
        )
        print(f"burst to the pool back at zero: {time.monotonic() - started:.1f}s")


CANARY_POOL = "flaky"
CANARY_FAILURE_RATE = 0.5
CANARY_JOBS_PER_SECOND = 40
CANARY_INTERVAL_SECONDS = 5


def _scrape_targets(cluster: Cluster, namespace: str, pool: str) -> list[str]:
    """The metrics port of each running worker pod of the pool, at its pod address."""
    targets = []
    for pod in _pods(cluster, namespace, f"workerfleet.dev/pool={pool}"):
        ports = [
            port["containerPort"]
            for container in pod["spec"]["containers"]
            for port in container.get("ports") or []
            if port.get("name") == "metrics"
        ]
        if pod["status"].get("podIP") and ports:
            targets.append(f"{pod['status']['podIP']}:{ports[0]}")
    return sorted(targets)


def _canary_pool(
    address: str, key: str, prometheus: PrometheusServer, prometheus_address: str, failure_rate: float
) -> dict[str, Any]:
    """Two demo-worker containers on the real node, half of them the canary of a new template; the
    operator pod reads Prometheus at `prometheus_address` (forwarded into the node)."""
    pool = _worker_pool(CANARY_POOL, address, key, replicas=2)
    [container] = pool["spec"]["template"]["spec"]["containers"]
    container["env"] = [
        {"name": "WORKERFLEET_DEMO_JOB_TYPES", "value": CANARY_JOB_TYPE},
        {"name": "WORKERFLEET_DEMO_DURATION_SECONDS", "value": "0.005"},
        {"name": "WORKERFLEET_DEMO_FAILURE_RATE", "value": str(failure_rate)},
    ]
    pool["spec"]["jobTypes"] = [CANARY_JOB_TYPE]
    settings = {
        **analysis(prometheus, intervalSeconds=CANARY_INTERVAL_SECONDS),
        "prometheus": {"address": f"http://{prometheus_address}"},
    }
    pool["spec"]["rollout"] = {
        "canary": {"steps": [{"weight": 50, "pauseSeconds": 120}], "analysis": settings}
    }
    return pool


def test_a_bad_canary_of_real_worker_containers_is_rolled_back(
    real_node: Cluster,
    operator_release: OperatorRelease,
    redis_server: RedisServer,
    prometheus_server: PrometheusServer,
) -> None:
    # Given a pool of two demo-worker containers under canary analysis, a steady flow of jobs, and
    # Prometheus on the host scraping the pods at their addresses on the real node
    namespace = operator_release.namespace
    key = f"canary:{uuid.uuid4().hex[:8]}"
    root = real_node.layout.root
    producer = SteadyProducer(redis_server.port, key, CANARY_JOB_TYPE, CANARY_JOBS_PER_SECOND)
    with (
        node.forwarded(root, redis_server.port, redis_server.port) as address,
        node.forwarded(root, prometheus_server.port, prometheus_server.port) as prometheus,
    ):
        real_node.apply(
            demo_job_type(),
            _canary_pool(address, key, prometheus_server, prometheus, 0.0),
            namespace=namespace,
        )
        eventually(
            lambda: (
                _rollout(real_node, namespace).get("phase") == "Healthy"
                and _ready_workers(real_node, namespace, CANARY_POOL) == 2
            ),
            what="the pool Healthy with two ready workers",
            timeout=90,
        )
        producer.start()
        try:
            # When the template changes to workers that fail half their jobs
            started = time.monotonic()
            real_node.apply(
                _canary_pool(address, key, prometheus_server, prometheus, CANARY_FAILURE_RATE),
                namespace=namespace,
            )

            # Then the canary's containers run on the real node, and once the analysis reads their
            # failures from Prometheus the canary is scaled to zero
            def rolled_back() -> bool:
                prometheus_server.set_targets(_scrape_targets(real_node, namespace, CANARY_POOL))
                canary = real_node.get(f"deployment/{CANARY_POOL}-canary", namespace=namespace)
                return canary is not None and canary["spec"]["replicas"] == 0

            canary_nodes = eventually(
                lambda: {
                    pod["spec"].get("nodeName")
                    for pod in _pods(
                        real_node,
                        namespace,
                        f"workerfleet.dev/pool={CANARY_POOL},workerfleet.dev/track=canary",
                    )
                },
                what="the canary's pod",
                timeout=30,
            )
            assert canary_nodes == {node.NODE_NAME}
            eventually(rolled_back, what="the canary rolled back", timeout=90, interval=1)
            rollback = time.monotonic() - started
            print(f"\nbad canary on real pods, template changed to canary at zero: {rollback:.1f}s")
        finally:
            producer.stop()
            prometheus_server.set_targets([])

    # And the pool is Degraded on its stable revision, with a Warning Event that gives the numbers
    status = eventually(
        lambda: _rollout(real_node, namespace).get("phase") == "Degraded" and _status(real_node, namespace),
        what="the pool Degraded",
        timeout=15,
    )
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutFailed")
    events = real_node.get(
        "events", f"--field-selector=involvedObject.name={CANARY_POOL}", namespace=namespace
    )["items"]
    rolled = [event for event in events if event["reason"] == "RolledBack"]
    assert rolled, [event["reason"] for event in events]
    assert rolled[0]["type"] == "Warning"
    assert "canary error rate" in rolled[0]["message"]
    real_node.kubectl("delete", "workerpool", CANARY_POOL, "-n", namespace, "--wait=false")


def _status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    body = cluster.get(f"workerpool/{CANARY_POOL}", namespace=namespace) or {}
    return dict(body.get("status") or {})


def _rollout(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict(_status(cluster, namespace).get("rollout") or {})


STALLING_HANDLER = '''"""A handler that blocks the worker's event loop: the consume loop stops turning."""
import time

from workerfleet.worker.handlers import handler


@handler("stall")
async def stall(job):
    time.sleep(3600)
'''
STALL_SECONDS = 3
LIVENESS_PERIOD_SECONDS = 2


def _stalling_pool(name: str, address: str, key: str) -> dict[str, Any]:
    """One demo-worker container whose handler module (from a ConfigMap) blocks on its first job,
    with a quick liveness probe of its own on the runtime's /healthz (templates' probes are kept)."""
    pool = _worker_pool(name, address, key, replicas=1)
    [container] = pool["spec"]["template"]["spec"]["containers"]
    container["env"] = [
        {"name": "WORKERFLEET_HANDLERS", "value": "stalling_handler"},
        {"name": "PYTHONPATH", "value": "/handlers"},
        {"name": "WORKERFLEET_STALL_SECONDS", "value": str(STALL_SECONDS)},
    ]
    container["volumeMounts"] = [{"name": "handlers", "mountPath": "/handlers", "readOnly": True}]
    container["livenessProbe"] = {
        "httpGet": {"path": "/healthz", "port": "metrics"},
        "periodSeconds": LIVENESS_PERIOD_SECONDS,
        "failureThreshold": 2,
        # A blocked event loop never handles SIGTERM: do not wait out the pod's grace period.
        "terminationGracePeriodSeconds": 1,
    }
    pool["spec"]["jobTypes"] = ["stall"]
    pool["spec"]["template"]["spec"]["volumes"] = [
        {"name": "handlers", "configMap": {"name": "stalling-handler"}}
    ]
    return pool


def test_a_worker_whose_handler_stalls_is_restarted_by_the_kubelets_liveness_probe(
    real_node: Cluster, operator_release: OperatorRelease, redis_server: RedisServer
) -> None:
    # Given a worker container whose handler blocks its event loop on the first job it takes
    namespace = operator_release.namespace
    key = f"stall:{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    with node.forwarded(real_node.layout.root, redis_server.port, redis_server.port) as address:
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "stalling-handler"},
            "data": {"stalling_handler.py": STALLING_HANDLER},
        }
        real_node.apply(configmap, job_type("stall"), namespace=namespace)
        real_node.apply(_stalling_pool("stalling", address, key), namespace=namespace)
        selector = "workerfleet.dev/pool=stalling"
        eventually(
            lambda: any(_is_ready(pod) for pod in _pods(real_node, namespace, selector)),
            what="the worker ready",
            timeout=90,
        )

        # When it takes a job
        started = time.monotonic()
        client.lpush(key, json.dumps({**json.loads(envelope(0)), "type": "stall"}))

        # Then the kubelet's liveness probe fails and the container is restarted
        def restarted() -> dict[str, Any] | None:
            for pod in _pods(real_node, namespace, selector):
                for status in pod["status"].get("containerStatuses") or []:
                    if status["restartCount"] >= 1:
                        return dict(status)
            return None

        status = eventually(restarted, what="the stalled worker restarted", timeout=60)
        print(f"\nstalled worker restarted by its liveness probe after {time.monotonic() - started:.1f}s")
        assert status["lastState"]["terminated"]["exitCode"] != 0
        events = real_node.get("events", "--field-selector", "reason=Unhealthy", namespace=namespace)
        assert any("Liveness probe failed" in event["message"] for event in events["items"]), events["items"]
        real_node.kubectl("delete", "workerpool", "stalling", "-n", namespace, "--wait=false")


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(condition["type"] == "Ready" and condition["status"] == "True" for condition in conditions)
