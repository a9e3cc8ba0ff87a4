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

from e2e import chart
from e2e.chart import OPERATOR_USER
from e2e.cluster import Cluster
from e2e.operator import OperatorProcess, Peering, register_metrics_api
from e2e.waiting import eventually

LIFETIME = 10
"""Peer lifetime in these tests: the bound on failover after SIGKILL."""
KILL_MARGIN = 8.0
"""On top of the lifetime: the activity check's period (2 s), listing and catching up, slow CI."""
GRACEFUL_BOUND = 6.0
"""After SIGTERM the record goes at once; the standby notices within its 2 s check."""
SECOND_PORTS = 150
"""Port shift of the second process (the first uses the session's ports)."""
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


def _token_id(kubeconfig: Path) -> str:
    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


class Replica:
    """One operator process as a peering replica, with its own token (and so its own audit trail)."""

    def __init__(self, cluster: Cluster, name: str, priority: int, port_shift: int) -> None:
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
