"""Several operator replicas peer through kopf: exactly one acts, a standby takes over when it dies.

Each process runs under the chart's ServiceAccount with a token of its own, so the audit log tells
their writes apart by the token's ID (user.extra authentication.kubernetes.io/credential-id).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import chart
from devenv.chart import OPERATOR_USER
from devenv.cluster import Cluster
from devenv.operator import OperatorProcess, Peering, register_metrics_api
from devenv.waiting import eventually

LIFETIME = 10
"""Peer lifetime in these tests: the bound on failover after SIGKILL."""
KILL_MARGIN = 8.0
"""On top of the lifetime: the activity check's period (2 s), listing and catching up, slow CI."""
GRACEFUL_BOUND = 6.0
"""After SIGTERM the record goes at once; the standby notices within its 2 s check."""
SECOND_PORTS = 150
"""Port shift of the second process (the first uses the session's ports)."""
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
OPERATOR_POD_SELECTOR = f"app.kubernetes.io/name={chart.RELEASE},app.kubernetes.io/instance={chart.RELEASE}"
"""The chart's selector labels (release and chart are both named workerfleet)."""
METRICS_API_SERVICE = f"{chart.RELEASE}-metrics-api"
"""The chart's Service in front of the metrics API: it selects the pod labelled active."""
SLICE_MARGIN = 5.0
"""After a label changes: the EndpointSlice controller's batching (1 s by default) and a slow CI."""


def _token_id(kubeconfig: Path) -> str:
    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


class Replica:
    """One operator process as a peering replica, with its own token (and so its own audit trail)."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        priority: int,
        port_shift: int,
        pod: tuple[str, str] | None = None,
    ) -> None:
        """`pod`: the chart's operator pod this process stands in for (and labels while active)."""
        self.name = name
        kubeconfig = chart.service_account_kubeconfig(
            cluster, cluster.layout.component_kubeconfig(f"chart-operator-{name}")
        )
        self.token_id = _token_id(kubeconfig)
        self.process = OperatorProcess(
            cluster,
            cluster.layout.logs / f"operator-{name}.log",
            kubeconfig,
            peering=Peering(identity=f"e2e-{name}", priority=priority, lifetime_seconds=LIFETIME),
            port_shift=port_shift,
            pod=pod,
            pod_selector=OPERATOR_POD_SELECTOR if pod else None,
        )

    def writes(self, cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
        return [
            event
            for event in cluster.audit_writes(user=OPERATOR_USER, namespace=namespace)
            if (event["user"].get("extra") or {}).get(CREDENTIAL_ID) == [self.token_id]
        ]


@pytest.fixture
def replicas(operator_chart: Cluster, operator_process: OperatorProcess) -> Iterator[dict[str, Replica]]:
    """Three replicas (not started); the session's standalone operator is stopped meanwhile."""
    operator_process.stop()
    register_metrics_api(operator_chart)
    made = {
        "a": Replica(operator_chart, "a", priority=300, port_shift=0),
        "b": Replica(operator_chart, "b", priority=200, port_shift=SECOND_PORTS),
        "c": Replica(operator_chart, "c", priority=100, port_shift=0),
    }
    try:
        yield made
    finally:
        for replica in made.values():
            replica.process.stop()
        _wait_for_records(operator_chart, set())
        operator_process.start()


def _records(cluster: Cluster) -> dict[str, Any]:
    body = json.loads(cluster.kubectl("get", "clusterkopfpeering", "workerfleet", "-o", "json").stdout)
    return dict(body.get("status") or {})


def _wait_for_records(cluster: Cluster, identities: set[str], timeout: float = LIFETIME + 30) -> None:
    eventually(
        lambda: set(_records(cluster)) == identities,
        what=f"peering records of exactly {sorted(identities)}",
        timeout=timeout,
    )


def _pool(name: str) -> str:
    documents = [
        {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "JobType",
            "metadata": {"name": f"{name}-jobs"},
            "spec": {"lane": "fast", "timeoutSeconds": 30},
        },
        {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": name},
            "spec": {
                "jobTypes": [f"{name}-jobs"],
                "replicas": 1,
                "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
                "queue": {"redis": {"address": "127.0.0.1:6379", "list": f"jobs:{name}"}},
            },
        },
    ]
    return "\n---\n".join(yaml.safe_dump(document) for document in documents)


def _ready(cluster: Cluster, namespace: str, pool: str) -> bool:
    result = cluster.kubectl("get", "workerpool", pool, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = (json.loads(result.stdout).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _events(cluster: Cluster, namespace: str, pool: str, reason: str) -> list[dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [event for event in items if event["involvedObject"]["name"] == pool and event["reason"] == reason]


def _readiness(replica: Replica) -> int:
    """The status of the metrics API's /readyz: 200 on the active replica, 503 on a standby."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the self-signed certificate made at start
    url = f"https://127.0.0.1:{replica.process.metrics_api_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _takeover_seconds(standby: Replica, since: float, bound: float) -> float:
    eventually(
        standby.process.is_active, what=f"replica {standby.name} to turn active", timeout=bound, interval=0.2
    )
    return time.monotonic() - since


def test_one_replica_acts_and_a_standby_takes_over_when_it_dies(
    replicas: dict[str, Replica], operator_chart: Cluster, namespace: str
) -> None:
    cluster, ns, a, b, c = operator_chart, namespace, replicas["a"], replicas["b"], replicas["c"]

    # Given two replicas peering in the chart's ClusterKopfPeering, a with the higher priority
    a.process.start()
    b.process.start()
    _wait_for_records(cluster, {"e2e-a", "e2e-b"})

    # Then exactly one acts: a; b reports standby
    eventually(a.process.is_active, what="replica a active", timeout=15)
    eventually(lambda: b.process.is_active() is False, what="replica b standby", timeout=15)
    assert "is standby: outranked by e2e-a" in b.process.log.read_text()
    assert (_readiness(a), _readiness(b)) == (200, 503)

    # When a pool is created
    cluster.kubectl("apply", "-n", ns, "-f", "-", input_text=_pool("first"))

    # Then it is reconciled once, by a alone: b wrote nothing at all in the namespace
    eventually(lambda: _ready(cluster, ns, "first"), what="pool first Ready", timeout=60)
    eventually(lambda: _events(cluster, ns, "first", "WorkersReady"), what="a WorkersReady Event", timeout=30)
    time.sleep(3)  # room for a second, duplicate reconcile to show up
    assert len(_events(cluster, ns, "first", "WorkersReady")) == 1
    assert a.writes(cluster, ns)
    assert {w["objectRef"]["resource"] for w in a.writes(cluster, ns)} >= {
        "workerpools",
        "deployments",
        "events",
    }
    assert b.writes(cluster, ns) == []
    assert b.process.is_active() is False

    # When a is killed (SIGKILL: its record stays until its lifetime runs out)
    killed_at = time.monotonic()
    a.process.kill()

    # Then b takes over within the lifetime (plus a margin) and reconciles a new pool
    after_kill = _takeover_seconds(b, killed_at, LIFETIME + KILL_MARGIN)
    print(f"takeover after SIGKILL: {after_kill:.1f} s (lifetime {LIFETIME} s)")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input_text=_pool("second"))
    eventually(lambda: _ready(cluster, ns, "second"), what="pool second Ready (by b)", timeout=60)
    assert {
        w["objectRef"].get("name")
        for w in b.writes(cluster, ns)
        if w["objectRef"]["resource"] == "workerpools"
    } >= {"second"}
    _wait_for_records(cluster, {"e2e-b"})  # the dead record is cleaned up

    # Given a new standby c next to the active b
    c.process.start()
    _wait_for_records(cluster, {"e2e-b", "e2e-c"})
    eventually(lambda: c.process.is_active() is False, what="replica c standby", timeout=15)
    assert b.process.is_active()

    # When b stops gracefully (SIGTERM: kopf removes its record on the way out)
    stopped_at = time.monotonic()
    b.process.stop()

    # Then c takes over within seconds and reconciles a new pool; c had written nothing before
    after_term = _takeover_seconds(c, stopped_at, GRACEFUL_BOUND)
    print(f"takeover after SIGTERM: {after_term:.1f} s")
    c_before = len(c.writes(cluster, ns))
    cluster.kubectl("apply", "-n", ns, "-f", "-", input_text=_pool("third"))
    eventually(lambda: _ready(cluster, ns, "third"), what="pool third Ready (by c)", timeout=60)
    assert len(c.writes(cluster, ns)) > c_before
    assert _ready(cluster, ns, "first")
    assert _ready(cluster, ns, "second")


def _operator_pods(cluster: Cluster) -> dict[str, str]:
    """The chart's operator pods that kwok runs (Running, Ready): pod name to pod IP."""
    result = cluster.kubectl(
        "get", "pods", "-n", chart.RELEASE_NAMESPACE, "-l", OPERATOR_POD_SELECTOR, "-o", "json"
    )
    pods: dict[str, str] = {}
    for pod in json.loads(result.stdout)["items"]:
        status = pod.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        if pod["metadata"].get("deletionTimestamp") is None and ready and status.get("podIP"):
            pods[pod["metadata"]["name"]] = status["podIP"]
    return pods


def _two_operator_pods(cluster: Cluster) -> list[str] | None:
    found = sorted(_operator_pods(cluster))
    return found[:2] if len(found) >= 2 else None


def _labelled_active(cluster: Cluster) -> set[str]:
    """Names of the release's pods that carry workerfleet.dev/active=true."""
    result = cluster.kubectl(
        "get",
        "pods",
        "-n",
        chart.RELEASE_NAMESPACE,
        "-l",
        f"{OPERATOR_POD_SELECTOR},workerfleet.dev/active=true",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    )
    return set(result.stdout.split())


def _service_endpoints(cluster: Cluster) -> set[tuple[str, str]]:
    """(targetRef name, address) of every ready endpoint in the metrics API Service's EndpointSlices."""
    result = cluster.kubectl(
        "get",
        "endpointslices",
        "-n",
        chart.RELEASE_NAMESPACE,
        "-l",
        f"kubernetes.io/service-name={METRICS_API_SERVICE}",
        "-o",
        "json",
    )
    endpoints: set[tuple[str, str]] = set()
    for item in json.loads(result.stdout)["items"]:
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            name = (endpoint.get("targetRef") or {}).get("name", "")
            endpoints.update((name, address) for address in endpoint["addresses"])
    return endpoints


def _routes_to_exactly(cluster: Cluster, pod: str, ip: str, *, since: float, bound: float) -> float:
    """Wait until the Service's EndpointSlices list `pod` alone; seconds since `since`."""
    seen: list[set[tuple[str, str]]] = [set()]

    def exactly() -> bool:
        seen[0] = _service_endpoints(cluster)
        return seen[0] == {(pod, ip)}

    try:
        eventually(
            exactly,
            what=f"the metrics API Service's EndpointSlices to list exactly pod {pod} ({ip})",
            timeout=bound,
            interval=0.2,
        )
    except AssertionError as error:
        labelled = sorted(_labelled_active(cluster))
        raise AssertionError(
            f"{error}; endpoints: {sorted(seen[0])}; pods labelled active: {labelled}"
        ) from None
    return time.monotonic() - since


@pytest.fixture
def pod_replicas(operator_chart: Cluster, operator_process: OperatorProcess) -> Iterator[dict[str, Replica]]:
    """Replicas a (higher priority) and b (not started), each standing in for one of the chart's operator
    pods; the session's standalone operator is stopped meanwhile and no pod is labelled afterwards."""
    cluster = operator_chart
    pods = eventually(
        lambda: _two_operator_pods(cluster),
        what="two Running, Ready operator pods of the chart, with pod IPs",
        timeout=60,
    )
    first, second = pods
    operator_process.stop()
    register_metrics_api(cluster)
    namespace = chart.RELEASE_NAMESPACE
    made = {
        "a": Replica(cluster, "a", priority=300, port_shift=0, pod=(namespace, first)),
        "b": Replica(cluster, "b", priority=200, port_shift=SECOND_PORTS, pod=(namespace, second)),
    }
    try:
        yield made
    finally:
        for replica in made.values():
            replica.process.stop()
        _wait_for_records(cluster, set())
        cluster.kubectl(
            "label", "pods", "-n", namespace, "-l", OPERATOR_POD_SELECTOR, "workerfleet.dev/active-"
        )
        operator_process.start()


def test_the_metrics_api_service_routes_to_the_active_replica_pod_only(
    pod_replicas: dict[str, Replica], operator_chart: Cluster
) -> None:
    cluster, a, b = operator_chart, pod_replicas["a"], pod_replicas["b"]
    pods = _operator_pods(cluster)
    assert a.process.pod is not None
    assert b.process.pod is not None
    pod_a, pod_b = a.process.pod[1], b.process.pod[1]
    ip_a, ip_b = pods[pod_a], pods[pod_b]
    assert _labelled_active(cluster) == set()
    assert _service_endpoints(cluster) == set()  # no pod is active yet: the Service routes nowhere

    # Given replica a (higher priority) in the chart's first operator pod and b in its second
    started_at = time.monotonic()
    a.process.start()
    b.process.start()
    _wait_for_records(cluster, {"e2e-a", "e2e-b"})

    # Then exactly a's pod is labelled active, and the Service's EndpointSlices list exactly that pod
    first_route = _routes_to_exactly(cluster, pod_a, ip_a, since=started_at, bound=30)
    print(f"EndpointSlice lists the active pod {first_route:.1f} s after starting both replicas")
    assert _labelled_active(cluster) == {pod_a}
    assert b.process.is_active() is False

    # When a is killed (SIGKILL: it cannot remove its own label)
    killed_at = time.monotonic()
    a.process.kill()

    # Then b takes over, labels its pod and takes a's label off; the EndpointSlice switches to b's pod
    after_kill = _routes_to_exactly(cluster, pod_b, ip_b, since=killed_at, bound=LIFETIME + KILL_MARGIN)
    print(f"EndpointSlice switch-over after SIGKILL: {after_kill:.1f} s (peer lifetime {LIFETIME} s)")
    assert _labelled_active(cluster) == {pod_b}
    eventually(b.process.is_active, what="b reporting itself active", timeout=10)
    _wait_for_records(cluster, {"e2e-b"})

    # When a starts again in its pod, as a restarted container would (its priority is the higher)
    restarted_at = time.monotonic()
    a.process.start()

    # Then a takes over again and b steps down: the EndpointSlice lists a's pod alone
    after_restart = _routes_to_exactly(cluster, pod_a, ip_a, since=restarted_at, bound=30)
    print(f"EndpointSlice switch-back after a restarts: {after_restart:.1f} s")
    eventually(lambda: b.process.is_active() is False, what="replica b standby", timeout=15)
    assert _labelled_active(cluster) == {pod_a}

    # When a stops gracefully (SIGTERM: it removes its peering record and its label on the way out)
    stopped_at = time.monotonic()
    a.process.stop()

    # Then the EndpointSlice switches to b's pod within seconds
    after_term = _routes_to_exactly(
        cluster, pod_b, ip_b, since=stopped_at, bound=GRACEFUL_BOUND + SLICE_MARGIN
    )
    print(f"EndpointSlice switch-over after SIGTERM: {after_term:.1f} s")
    assert _labelled_active(cluster) == {pod_b}
