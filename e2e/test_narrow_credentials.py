"""The operator under kopf with narrow credentials: a revoked token, and RBAC bound to a few namespaces.

The operator runs on this host with a kubeconfig holding a ServiceAccount's token (TokenRequest API),
so the API server judges exactly that identity; its audit log and its count of refused requests show
what the operator sent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv import chart
from devenv.cluster import Cluster
from devenv.operator import OperatorProcess, Peering
from devenv.waiting import eventually
from e2e import pools

PORT_SHIFT = 300
"""Ports of its own, beside the session's operator (unshifted) and a second replica's (150)."""
REVOKED_WINDOW_SECONDS = 20.0
"""How long the operator may take to stop after its token is revoked; refusals are counted meanwhile.
The API server keeps accepting a token it verified for 10 s (its authentication cache)."""
MAX_REFUSED_REQUESTS = 20
"""Requests refused within that window: a few, never a hot loop (kopf logging in again and again
sent well over a hundred a second)."""

ACT_SECONDS = 10.0
"""From a pool's creation to the namespace-bound operator's first write for it and the pool Ready: its
start-up, peering and one reconcile (kopf asked for the cluster's namespace list for a minute first)."""


def _exit_code_within(process: OperatorProcess, seconds: float) -> int | None:
    """The process's exit status once it ends, or None when it still runs after `seconds`."""
    deadline = time.monotonic() + seconds
    while process.exit_code is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return process.exit_code


def _refused_requests(cluster: Cluster) -> int:
    """Requests the API server could not authenticate, from its own counter: a revoked token's
    requests have no user, and reads are not in the audit log, so the counter is what sees them all."""
    metrics = cluster.kubectl("get", "--raw", "/metrics").stdout
    return sum(
        int(float(line.split()[-1]))
        for line in metrics.splitlines()
        if line.startswith("authentication_attempts{") and 'result="success"' not in line
    )


@pytest.fixture
def service_account(crds: Cluster, namespace: str) -> Iterator[tuple[str, Path]]:
    """A ServiceAccount allowed everything (the credential is what is under test, not its rights),
    and a kubeconfig with a token of it; its ClusterRoleBinding is removed afterwards."""
    name = f"operator-{uuid.uuid4().hex[:6]}"
    crds.kubectl("create", "serviceaccount", name, "-n", namespace)
    crds.kubectl(
        "create",
        "clusterrolebinding",
        name,
        "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:{name}",
    )
    kubeconfig = chart.service_account_kubeconfig(
        crds, crds.layout.component_kubeconfig(name), namespace=namespace, name=name
    )
    try:
        yield name, kubeconfig
    finally:
        crds.kubectl("delete", "clusterrolebinding", name, "--ignore-not-found")


def test_a_revoked_token_stops_the_operator_instead_of_a_hot_loop_of_refused_requests(
    crds: Cluster, namespace: str, service_account: tuple[str, Path]
) -> None:
    cluster, name, kubeconfig = crds, *service_account
    log = cluster.layout.logs / f"operator-{name}.log"

    # Given an operator replica peering in one namespace with a token of its ServiceAccount
    cluster.apply(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name}}, namespace=namespace
    )
    process = OperatorProcess(
        cluster,
        log,
        kubeconfig,
        peering=Peering(identity=name, priority=100, name=name),
        port_shift=PORT_SHIFT,
        register=False,
        extra_args=[f"--namespace={namespace}"],
    )
    try:
        process.start()
        eventually(process.is_active, what="the replica to turn active", timeout=20)

        # When its ServiceAccount is deleted, so the API server refuses the token
        refused_before = _refused_requests(cluster)
        cluster.kubectl("delete", "serviceaccount", name, "-n", namespace)
        revoked = time.monotonic()
        exit_code = _exit_code_within(process, REVOKED_WINDOW_SECONDS)
        print(f"exit status {exit_code} {time.monotonic() - revoked:.1f} s after the token was revoked")

        # Then it sent only a few refused requests, not a storm
        refused = _refused_requests(cluster) - refused_before
        print(f"{refused} requests refused meanwhile")
        assert refused <= MAX_REFUSED_REQUESTS, (
            f"{refused} requests refused in {REVOKED_WINDOW_SECONDS:.0f} s after the token was revoked"
        )
        # And it exited with an error that names the refused credential, so its pod restarts
        assert exit_code not in (None, 0), f"exit status {exit_code} after the token was revoked"
        assert "refused the operator's credentials (401 Unauthorized) from kubeconfig" in log.read_text()
    finally:
        process.stop()


@pytest.fixture
def namespaced_release(crds: Cluster, namespace: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The chart installed as a release of its own that watches only `namespace` (its RBAC there
    through a RoleBinding, none to list namespaces): (release, its namespace, values); uninstalled after."""
    suffix = uuid.uuid4().hex[:6]
    name, release_namespace = f"workerfleet-{suffix}", f"wf-system-{suffix}"
    # The cluster's metrics API is the session operator's; the peering object is named after the release.
    values: dict[str, Any] = {
        **chart.E2E_VALUES,
        "metricsApi": {"enabled": False},
        "watchNamespaces": [namespace],
        "peering": {"name": name},
    }
    chart.install(crds, values, release=name, namespace=release_namespace)
    try:
        yield name, release_namespace, values
    finally:
        chart.uninstall(crds, release=name, namespace=release_namespace)
        crds.kubectl("delete", "namespace", release_namespace, "--wait=false", check=False)


@pytest.fixture
def suite_operator_paused(crds: Cluster, request: pytest.FixtureRequest) -> Iterator[None]:
    """The suite's host-process operator serves every namespace: running, it reconciles the pool first
    and leaves the namespace-bound operator nothing to write. When it runs (it then holds the cluster's
    external metrics APIService) it is stopped for the test and started again after."""
    if crds.get("apiservice", "v1beta1.external.metrics.k8s.io") is None:
        yield
        return
    suite_operator: OperatorProcess = request.getfixturevalue("operator_process")
    suite_operator.stop()
    try:
        yield
    finally:
        suite_operator.start()


@pytest.mark.usefixtures("suite_operator_paused")
def test_an_operator_bound_to_its_namespaces_acts_within_seconds(
    crds: Cluster, namespace: str, namespaced_release: tuple[str, str, dict[str, Any]]
) -> None:
    cluster, (name, release_namespace, values) = crds, namespaced_release
    user = f"system:serviceaccount:{release_namespace}:{name}"
    assert not _can(cluster, user, "list", "namespaces"), "the release must not list namespaces"

    # Given the operator with the release's identity and flags, watching only this namespace
    kubeconfig = chart.service_account_kubeconfig(
        cluster, cluster.layout.component_kubeconfig(name), namespace=release_namespace, name=name
    )
    process = OperatorProcess(
        cluster,
        cluster.layout.logs / f"operator-{name}.log",
        kubeconfig,
        peering=Peering(identity=name, priority=100, name=name),
        port_shift=PORT_SHIFT,
        serve_metrics_api=False,
        extra_args=[*chart.operator_args(values, release=name), f"--namespace={namespace}"],
    )
    try:
        process.start()

        # When a pool is created there
        created = time.monotonic()
        cluster.apply(pools.job_type(f"{name}-jobs"), namespace=namespace)
        cluster.apply(pools.pool("narrow", [f"{name}-jobs"]), namespace=namespace)

        # Then within seconds this operator has acted on it (its identity in the audit log), and it is Ready
        eventually(
            lambda: _writes_for_pool(cluster, user, namespace, "narrow"),
            what=f"a write by {user} for pool narrow (its status or Deployment)",
            timeout=ACT_SECONDS,
            interval=0.2,
        )
        eventually(lambda: pools.ready(cluster, namespace, "narrow"), what="pool narrow Ready", timeout=5)
        print(f"acted and Ready {time.monotonic() - created:.1f} s after the pool was created")
    finally:
        process.stop()
        cluster.kubectl("delete", "jobtype", f"{name}-jobs", "--ignore-not-found", "--wait=false")


def _writes_for_pool(cluster: Cluster, user: str, namespace: str, pool: str) -> list[dict[str, Any]]:
    """The user's writes of the pool's status and its Deployment (named after it), not its peering."""
    return [
        event
        for event in cluster.audit_writes(user=user, namespace=namespace)
        if event["objectRef"].get("name") == pool
        and event["objectRef"].get("resource") in {"workerpools", "deployments"}
    ]


def _can(cluster: Cluster, user: str, *request: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *request, f"--as={user}", check=False)
    return result.stdout.strip() == "yes"
