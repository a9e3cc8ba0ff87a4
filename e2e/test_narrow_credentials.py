"""The operator under kopf with narrow credentials: a revoked token, and RBAC bound to a few namespaces.

The operator runs on this host with a kubeconfig holding a ServiceAccount's token (TokenRequest API),
so the API server judges exactly that identity; the audit log shows what it sent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv import chart
from devenv.cluster import Cluster
from devenv.operator import OperatorProcess, Peering
from devenv.waiting import eventually

PORT_SHIFT = 300
"""Ports of its own, beside the session's operator (unshifted) and a second replica's (150)."""
REVOKED_WINDOW_SECONDS = 20.0
"""How long the operator may take to stop after its token is revoked; refusals are counted meanwhile.
The API server keeps accepting a token it verified for 10 s (its authentication cache)."""
MAX_REFUSED_REQUESTS = 20
"""Requests refused within that window: a few, never a hot loop (kopf logging in again and again
sent well over a hundred a second)."""


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
        exit_code = _exit_code_within(process, REVOKED_WINDOW_SECONDS)

        # Then it sent only a few refused requests, not a storm
        refused = _refused_requests(cluster) - refused_before
        assert refused <= MAX_REFUSED_REQUESTS, (
            f"{refused} requests refused in {REVOKED_WINDOW_SECONDS:.0f} s after the token was revoked"
        )
        # And it exited with an error that names the refused credential, so its pod restarts
        assert exit_code not in (None, 0), f"exit status {exit_code} after the token was revoked"
        assert "refused the operator's credentials (401 Unauthorized) from kubeconfig" in log.read_text()
    finally:
        process.stop()
