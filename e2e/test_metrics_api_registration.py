"""A metrics API that no backend answers must not stall the cluster.

While `v1beta1.external.metrics.k8s.io` is registered and nothing answers it, discovery of that group
fails, and the namespace controller (and the garbage collector) cannot finish: every namespace
deletion hangs with NamespaceDeletionDiscoveryFailure. The operator registers the APIService while it
serves it and removes it when the last replica stops; each test deletes a namespace in one of the ways
an operator stops serving and asserts the namespace is gone within NAMESPACE_GONE_BOUND.

The operator runs as host processes (pods are simulated); the APIService reaches them through an
ExternalName Service to localhost, and each process listens on a port of its own, so "the endpoint
follows the active replica" is the APIService's port following it.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import chart
from devenv.cluster import Cluster
from devenv.operator import (
    METRICS_API_PORT,
    METRICS_API_SERVICE,
    OperatorProcess,
    Peering,
    register_metrics_api,
    stop_together,
)
from devenv.waiting import eventually

API_SERVICE = "v1beta1.external.metrics.k8s.io"
DISCOVERY = "/apis/external.metrics.k8s.io/v1beta1"
NAMESPACE_GONE_BOUND = 30.0
"""From `kubectl delete namespace` to the namespace gone. Unstalled it takes 1-6 s here (the namespace
controller, the content, a loaded 2-core machine); a stale metrics API holds it forever."""
UNSERVED_NOTICED_BOUND = 90.0
"""The aggregator's availability check runs on changes and every 30 s or so; a killed backend is seen
within about a minute (until then discovery is served from its cache)."""
AFTER_RESTART_BOUND = 75.0
"""From a crashed operator's restart to the stalled namespace gone: the namespace controller retries a
namespace with a backoff that doubles from 5 ms up to 60 s, so after a stall it may wait about as long
as the stall lasted (up to that minute) before it looks again; plus a margin."""
STALLED_FOR = 15.0
"""How long a namespace deletion is watched staying stalled after a crash (SIGKILL)."""
LIFETIME = 10
"""Peer lifetime of the rolling-upgrade replicas."""
SECOND_PORTS = 150
"""Port shift of the second replica: both listen at once, as two pods would."""
GRACEFUL_BOUND = 10.0
"""After SIGTERM of the active replica: the standby takes over within its 2 s check, then registers."""
STAYS_ABSENT = 8.0
"""After uninstall, how long the APIService is watched staying away while the old process still runs."""


def _api_service(cluster: Cluster) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "apiservice", API_SERVICE, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _available(cluster: Cluster) -> bool | None:
    """The APIService's Available condition; None when there is no APIService."""
    body = _api_service(cluster)
    if body is None:
        return None
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def _unserved_or_absent(cluster: Cluster) -> bool:
    """The aggregator knows nothing answers (Available=False), or there is no APIService at all."""
    return _available(cluster) is not True


def _discovered(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "--raw", DISCOVERY, check=False).returncode == 0


def _namespace_conditions(cluster: Cluster, name: str) -> list[str]:
    result = cluster.kubectl("get", "namespace", name, "-o", "json", check=False)
    if result.returncode != 0:
        return []
    conditions = (json.loads(result.stdout).get("status") or {}).get("conditions") or []
    return [f"{c['type']}={c['status']}: {c.get('message', '')}" for c in conditions if c["status"] == "True"]


def _namespace_gone(cluster: Cluster, name: str) -> bool:
    result = cluster.kubectl("get", "namespace", name, "-o", "name", check=False)
    return result.returncode != 0 and "NotFound" in result.stderr


def _start_namespace_deletion(cluster: Cluster) -> tuple[str, float]:
    """A namespace with content (a ConfigMap), and its deletion sent: (name, when it was sent)."""
    name = f"e2e-gone-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("create", "configmap", "content", "-n", name, "--from-literal=key=value")
    sent = time.monotonic()
    cluster.kubectl("delete", "namespace", name, "--wait=false")
    return name, sent


def _gone_within(cluster: Cluster, name: str, since: float, bound: float) -> float:
    """Wait until namespace `name` is gone; seconds since `since`. The failure names the conditions."""
    try:
        eventually(
            lambda: _namespace_gone(cluster, name),
            what=f"namespace {name} to be deleted",
            timeout=bound,
            interval=0.2,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}; conditions: {_namespace_conditions(cluster, name)}") from None
    return time.monotonic() - since


def test_a_namespace_is_deleted_while_the_operator_is_stopped(
    operator: Cluster, operator_process: OperatorProcess
) -> None:
    cluster = operator
    # Given the operator serving the metrics API
    eventually(lambda: _discovered(cluster), what="the metrics API discovered", timeout=60)

    try:
        # When the operator stops (SIGTERM: the last replica goes)
        operator_process.stop()

        # (and the aggregator has noticed: it probes the APIService's backend now and then)
        eventually(
            lambda: _unserved_or_absent(cluster),
            what="the aggregator to see the metrics API unserved",
            timeout=UNSERVED_NOTICED_BOUND,
        )

        # Then a namespace deletion completes, and the APIService is gone
        name, sent = _start_namespace_deletion(cluster)
        seconds = _gone_within(cluster, name, sent, NAMESPACE_GONE_BOUND)
        print(f"namespace deleted {seconds:.1f} s after the delete, operator stopped")
        assert _api_service(cluster) is None
    finally:
        operator_process.start()

    # And once it runs again the API is registered and served
    eventually(lambda: _discovered(cluster), what="the metrics API discovered again", timeout=60)


def test_after_a_crash_a_namespace_deletion_waits_for_the_restarted_operator(
    operator: Cluster, operator_process: OperatorProcess
) -> None:
    cluster = operator
    # Given the operator serving the metrics API
    eventually(lambda: _discovered(cluster), what="the metrics API discovered", timeout=60)

    try:
        # When the operator is SIGKILLed (it cannot remove anything), and once the aggregator has
        # noticed, a namespace is deleted
        killed = time.monotonic()
        operator_process.kill()
        eventually(
            lambda: _unserved_or_absent(cluster),
            what="the aggregator to see the metrics API unserved",
            timeout=UNSERVED_NOTICED_BOUND,
        )
        print(f"APIService Available=False {time.monotonic() - killed:.1f} s after SIGKILL")
        name, _ = _start_namespace_deletion(cluster)

        # Then the deletion stalls on discovery while nothing answers (the documented limit of a crash)
        stalled_until = time.monotonic() + STALLED_FOR
        while time.monotonic() < stalled_until:
            assert not _namespace_gone(cluster, name), "deleted although the metrics API was down"
            time.sleep(1)
        conditions = " ".join(_namespace_conditions(cluster, name))
        assert "NamespaceDeletionDiscoveryFailure" in conditions, conditions
    finally:
        # When the operator starts again (as the restarted container would)
        restarted = time.monotonic()
        operator_process.start()

    # Then the namespace deletion completes within the bound of the restart
    seconds = _gone_within(cluster, name, restarted, AFTER_RESTART_BOUND)
    print(f"namespace deleted {seconds:.1f} s after the crashed operator restarted")


@pytest.fixture
def upgrade_replicas(
    operator_chart: Cluster, operator_process: OperatorProcess
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """An old replica (higher priority, the session's ports) and a new one (shifted ports), not started,
    under the chart's identity and peering; the session's standalone operator is stopped meanwhile."""
    cluster = operator_chart
    operator_process.stop()
    register_metrics_api(cluster)

    def replica(name: str, priority: int, port_shift: int) -> OperatorProcess:
        kubeconfig = chart.service_account_kubeconfig(
            cluster, cluster.layout.component_kubeconfig(f"chart-operator-{name}")
        )
        return OperatorProcess(
            cluster,
            cluster.layout.logs / f"operator-{name}.log",
            kubeconfig,
            peering=Peering(identity=f"e2e-{name}", priority=priority, lifetime_seconds=LIFETIME),
            port_shift=port_shift,
            extra_args=chart.operator_args(chart.E2E_VALUES),
        )

    old, new = replica("old", 300, 0), replica("new", 200, SECOND_PORTS)
    try:
        yield old, new
    finally:
        old.stop()
        new.stop()
        operator_process.start()


def _served_by(cluster: Cluster, process: OperatorProcess) -> bool:
    """The APIService names the port `process` listens on, and the aggregator discovers it there."""
    body = _api_service(cluster)
    if body is None:
        return False
    port = body["spec"]["service"]["port"]
    return bool(port == process.metrics_api_port and _discovered(cluster))


def test_a_namespace_is_deleted_during_a_rolling_upgrade(
    upgrade_replicas: tuple[OperatorProcess, OperatorProcess], operator_chart: Cluster
) -> None:
    cluster = operator_chart
    old, new = upgrade_replicas
    assert old.metrics_api_port == METRICS_API_PORT

    # Given the old replica active and serving, and a new replica started next to it (the surge pod)
    old.start()
    eventually(old.is_active, what="the old replica active", timeout=30)
    eventually(lambda: _served_by(cluster, old), what="the metrics API served by the old replica", timeout=30)
    new.start()
    eventually(lambda: new.is_active() is False, what="the new replica standby", timeout=30)

    # When the old replica is SIGTERMed, and a namespace is deleted at once
    stopped = time.monotonic()
    old.stop()
    name, sent = _start_namespace_deletion(cluster)

    # Then the new replica serves the API within seconds, and the namespace deletion completes
    eventually(
        lambda: _served_by(cluster, new),
        what="the metrics API served by the new replica",
        timeout=GRACEFUL_BOUND,
        interval=0.2,
    )
    print(f"metrics API served by the new replica {time.monotonic() - stopped:.1f} s after SIGTERM")
    seconds = _gone_within(cluster, name, sent, NAMESPACE_GONE_BOUND)
    print(f"namespace deleted {seconds:.1f} s after the delete, during a rolling upgrade")


def _peering_records(cluster: Cluster) -> set[str]:
    body = json.loads(cluster.kubectl("get", "clusterkopfpeering", "workerfleet", "-o", "json").stdout)
    return set(body.get("status") or {})


def test_a_namespace_is_deleted_after_every_replica_stops_at_once(
    upgrade_replicas: tuple[OperatorProcess, OperatorProcess], operator_chart: Cluster
) -> None:
    cluster = operator_chart
    first, second = upgrade_replicas
    # Given two replicas, one active and serving, one standby
    first.start()
    second.start()
    eventually(lambda: _served_by(cluster, first), what="the metrics API served by the first", timeout=30)
    eventually(lambda: second.is_active() is False, what="the second replica standby", timeout=30)
    eventually(
        lambda: _peering_records(cluster) == {"e2e-old", "e2e-new"},
        what="both replicas' peering records",
        timeout=30,
    )

    # When both are sent SIGTERM at the same moment (a scale to 0; the pods on `helm uninstall`)
    stopped = time.monotonic()
    stop_together([first, second])

    # Then the last one to go removes the APIService (each waited for the other's record to go), and a
    # namespace deletion completes
    eventually(lambda: _api_service(cluster) is None, what="the APIService removed", timeout=10)
    print(f"APIService removed {time.monotonic() - stopped:.1f} s after both replicas were sent SIGTERM")
    name, sent = _start_namespace_deletion(cluster)
    seconds = _gone_within(cluster, name, sent, NAMESPACE_GONE_BOUND)
    print(f"namespace deleted {seconds:.1f} s after the delete, every replica stopped")


def test_a_namespace_is_deleted_after_helm_uninstall(
    operator_chart: Cluster, operator_process: OperatorProcess
) -> None:
    cluster = operator_chart
    # Given the chart installed and its operator serving the metrics API
    eventually(lambda: _discovered(cluster), what="the metrics API discovered", timeout=60)

    try:
        # When the release is uninstalled while its operator still runs (its RBAC may go before the pod's
        # SIGTERM handler runs: here it never runs at all)
        uninstalled = time.monotonic()
        chart.uninstall(cluster)

        # Then the APIService is gone and stays gone, and a namespace deletion completes
        eventually(lambda: _api_service(cluster) is None, what="the APIService removed", timeout=30)
        print(f"APIService removed {time.monotonic() - uninstalled:.1f} s after helm uninstall began")
        name, sent = _start_namespace_deletion(cluster)
        seconds = _gone_within(cluster, name, sent, NAMESPACE_GONE_BOUND)
        print(f"namespace deleted {seconds:.1f} s after the delete, after helm uninstall")
        watched_until = time.monotonic() + STAYS_ABSENT
        while time.monotonic() < watched_until:
            assert _api_service(cluster) is None, "the uninstalled operator registered the API again"
            time.sleep(1)
    finally:
        # The session's chart and operator back, with a token of the new ServiceAccount
        operator_process.stop()
        chart.install(cluster, chart.E2E_VALUES)
        chart.service_account_kubeconfig(cluster, operator_process.kubeconfig)
        register_metrics_api(cluster)
        operator_process.start()


OLDER_CHART_POST_RENDERER = """
import base64, sys, yaml
documents = [d for d in yaml.safe_load_all(sys.stdin) if d]
[ca] = [d for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-metrics-api-ca")]
documents.append({
    "apiVersion": "apiregistration.k8s.io/v1",
    "kind": "APIService",
    "metadata": {"name": "v1beta1.external.metrics.k8s.io", "labels": ca["metadata"]["labels"]},
    "spec": {
        "group": "external.metrics.k8s.io",
        "version": "v1beta1",
        "service": {"name": "workerfleet-metrics-api", "namespace": ca["metadata"]["namespace"], "port": 443},
        "caBundle": base64.b64encode(ca["data"]["ca.crt"].encode()).decode(),
        "groupPriorityMinimum": 100,
        "versionPriority": 100,
    },
})
sys.stdout.write(yaml.safe_dump_all(documents))
"""
"""Renders the chart as its versions before this one did: with the APIService in the release."""


def test_helm_upgrade_from_a_release_that_templated_the_api_service(
    operator_chart: Cluster, operator_process: OperatorProcess, tmp_path: Path
) -> None:
    cluster = operator_chart
    renderer = tmp_path / "older-chart"
    renderer.write_text(f"#!{sys.executable}\n{OLDER_CHART_POST_RENDERER}")
    renderer.chmod(0o755)
    operator_process.stop()
    try:
        # Given a release made by a chart version that templated the APIService
        chart.helm(
            cluster,
            "upgrade",
            "--install",
            chart.RELEASE,
            str(chart.CHART),
            "--namespace",
            chart.RELEASE_NAMESPACE,
            "--values",
            "-",
            "--post-renderer",
            str(renderer),
            "--wait",
            "--timeout=120s",
            input_text=yaml.safe_dump(chart.E2E_VALUES),
        )
        older = _api_service(cluster)
        assert older is not None
        assert older["metadata"]["annotations"]["meta.helm.sh/release-name"] == chart.RELEASE

        # When it is upgraded to this chart
        chart.install(cluster, chart.E2E_VALUES)

        # Then Helm deletes that APIService (it left the release) rather than conflicting with anything
        assert _api_service(cluster) is None
    finally:
        chart.install(cluster, chart.E2E_VALUES)
        started = time.monotonic()
        operator_process.start()

    # And the operator registers its own, owned by the release's ClusterRole, which later upgrades keep
    print(
        f"APIService registered and Available {time.monotonic() - started:.1f} s after the operator started"
    )
    registered = _api_service(cluster)
    assert registered is not None
    metadata = registered["metadata"]
    assert [owner["name"] for owner in metadata["ownerReferences"]] == [f"{chart.RELEASE}-cluster"]
    assert "meta.helm.sh/release-name" not in (metadata.get("annotations") or {})
    chart.install(cluster, chart.E2E_VALUES)
    again = _api_service(cluster)
    assert again is not None
    assert again["metadata"]["uid"] == metadata["uid"]
    assert _discovered(cluster)


def _create_as_operator(cluster: Cluster, name: str, namespace: str, **spec: Any) -> str:
    """A server-side dry run of creating an APIService as the operator's ServiceAccount; its stderr."""
    body = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": name},
        "spec": {
            "group": name.split(".", 1)[1],
            "version": name.split(".", 1)[0],
            "service": {"namespace": namespace, "name": "workerfleet-metrics-api", "port": 443},
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
            **spec,
        },
    }
    result = cluster.kubectl(
        "create",
        "--dry-run=server",
        f"--as={chart.OPERATOR_USER}",
        "-f",
        "-",
        input_text=json.dumps(body),
        check=False,
    )
    return result.stderr


def test_the_operator_may_register_only_its_own_metrics_api(operator_chart: Cluster) -> None:
    cluster = operator_chart
    # RBAC lets the operator's ServiceAccount create any APIService (create has no resourceNames);
    # the chart's policy holds it to the external metrics API, in the release namespace, verifying TLS
    ns = chart.RELEASE_NAMESPACE
    allowed = _create_as_operator(cluster, API_SERVICE, ns)
    assert allowed == "" or "already exists" in allowed, allowed
    assert "may register only" in _create_as_operator(cluster, "v1beta1.custom.metrics.k8s.io", ns)
    assert "may route" in _create_as_operator(cluster, API_SERVICE, "kube-system")
    assert "may route" in _create_as_operator(cluster, API_SERVICE, ns, insecureSkipTLSVerify=True)
    # and it may delete or patch no other APIService
    for verb in ("delete", "patch"):
        answer = cluster.kubectl(
            "auth",
            "can-i",
            verb,
            "apiservices/v1beta1.metrics.k8s.io",
            f"--as={chart.OPERATOR_USER}",
            check=False,
        )
        assert answer.stdout.strip() == "no", verb


NEIGHBOUR_SERVICE = "neighbour-metrics"
"""Another external metrics server's Service, in the operator's own namespace."""


def _managers(cluster: Cluster) -> set[str]:
    """The field managers that ever wrote the APIService."""
    result = cluster.kubectl("get", "apiservice", API_SERVICE, "-o", "json", "--show-managed-fields")
    return {entry["manager"] for entry in json.loads(result.stdout)["metadata"].get("managedFields") or []}


def test_a_neighbours_api_service_in_the_release_namespace_is_left_alone(
    operator: Cluster, operator_process: OperatorProcess
) -> None:
    cluster = operator
    namespace, _ = METRICS_API_SERVICE
    service = {"namespace": namespace, "name": NEIGHBOUR_SERVICE, "port": 443}
    neighbour = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": API_SERVICE},
        "spec": {
            "group": "external.metrics.k8s.io",
            "version": "v1beta1",
            "service": service,
            "caBundle": base64.b64encode(b"the neighbour's CA").decode(),
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }
    # Given the operator stopped (it removes its APIService) and a neighbouring metrics server's
    # APIService routed to a Service of its own in the operator's namespace
    operator_process.stop()
    try:
        cluster.kubectl("create", "-f", "-", input_text=json.dumps(neighbour))
        created = _api_service(cluster)
        assert created is not None

        # When the operator starts and makes its registration check (at once on turning active)
        log_start = operator_process.log.stat().st_size
        operator_process.start(wait_registered=False)

        def checked() -> str | None:
            text = operator_process.log.read_text(errors="replace")[log_start:]
            found = [line for line in text.splitlines() if "metrics API " in line]
            return found[-1] if found else None

        verdict = eventually(checked, what="the operator's registration check in its log", timeout=30)

        # Then the neighbour's APIService is left as it was: same object, same Service, never written
        after = _api_service(cluster)
        assert after is not None
        assert after["spec"]["service"] == service, (verdict, after["spec"]["service"])
        assert after["metadata"]["uid"] == created["metadata"]["uid"]
        assert "workerfleet-metrics-api" not in _managers(cluster), _managers(cluster)
        assert "left alone" in verdict, verdict
    finally:
        # (an APIService nothing answers stalls namespace deletions: it goes before anything else runs)
        operator_process.stop()
        cluster.kubectl("delete", "apiservice", API_SERVICE, "--ignore-not-found")
        operator_process.start()
