"""The Helm chart in the local cluster: install it, and act as the operator's ServiceAccount.

Pods are simulated (kwok), so the chart's operator pod becomes Ready but runs nothing. To prove the
chart's RBAC, the operator process runs on this host with a kubeconfig holding a token of the
chart's ServiceAccount: the API server sees exactly the identity the pod would have.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from devenv import node
from devenv.cluster import REPOSITORY, Cluster
from devenv.toolchain import binaries

CHART = REPOSITORY / "charts" / "workerfleet"
RELEASE = "workerfleet"
RELEASE_NAMESPACE = "workerfleet-system"
SERVICE_ACCOUNT = RELEASE  # the chart names it after the release ("workerfleet" is not repeated)
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT}"
TOKEN_DURATION = "6h"

QUEUE_CREDENTIALS_SECRETS = ["redis-credentials", "rabbitmq-credentials"]
"""The only Secret names the operator may read (the examples' queues name them)."""

DELEGABLE_WORKER_PERMISSIONS = [
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch", "create", "update", "patch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
]
"""What the examples' and the tests' JobTypes grant their workers, and nothing more."""

ALLOWED_QUEUE_ADDRESSES = ["127.0.0.1", "localhost", "*.queues"]
"""Where the tests' and the examples' queues are: any other queue address is refused."""


def _chart_node_label_keys() -> list[str]:
    values = yaml.safe_load((REPOSITORY / "charts" / "workerfleet" / "values.yaml").read_text())
    keys: list[str] = values["admission"]["nodeLabelKeys"]
    return keys


REAL_NODE_PLACEMENT: dict[str, Any] = {
    "tolerationKeys": [node.TAINT_KEY],
    "nodeLabelKeys": [*_chart_node_label_keys(), node.NODE_LABEL],
}
"""What the pool-author policy must admit for the tests' pools on the real node (its taint and label):
every release in the cluster has that policy, and each holds every pool."""

E2E_VALUES: dict[str, Any] = {
    "rbac": {
        "delegableWorkerPermissions": DELEGABLE_WORKER_PERMISSIONS,
        "queueCredentialSecrets": QUEUE_CREDENTIALS_SECRETS,
    },
    "allowedAddresses": {"queues": ALLOWED_QUEUE_ADDRESSES},
    "admission": REAL_NODE_PLACEMENT,
}


ADMISSION_POLICIES = ("pool-author", "jobtype-use", "operator-bounds", "deletion-cost-only")
"""The chart's admission policies (named <release>-<policy>) the operator requires before serving pools."""


def operator_args(values: dict[str, Any], *, release: str = RELEASE) -> tuple[str, ...]:
    """The flags the chart's Deployment gives the operator for these values' tenancy settings, the
    owner of the APIService it registers (the release's ClusterRole) and the admission policies."""
    allowed = values.get("allowedAddresses") or {}
    return (
        f"--delegable-permissions={json.dumps(values['rbac']['delegableWorkerPermissions'])}",
        f"--queue-credentials-role={release}-queue-credentials",
        *(f"--allow-queue-address={address}" for address in allowed.get("queues", [])),
        *(f"--allow-prometheus={address}" for address in allowed.get("prometheus", [])),
        f"--metrics-api-owner-cluster-role={release}-cluster",
        *(f"--admission-policy={release}-{policy}" for policy in ADMISSION_POLICIES),
    )


class HelmFailed(subprocess.CalledProcessError):
    """A failed helm command; its message carries what helm said, so a failure explains itself."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


def helm(
    cluster: Cluster, *args: str, input_text: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm against this cluster as the admin; raises when it fails."""
    environment = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    result = subprocess.run(
        [str(binaries()["helm"].path), *args],
        input=input_text,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=environment,
    )
    if result.returncode != 0:
        raise HelmFailed(result.returncode, result.args, result.stdout, result.stderr)
    return result


def restricted_release_namespace(cluster: Cluster, namespace: str) -> None:
    """The release's namespace, enforcing `restricted`, so the operator pod must pass it."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(manifest))


def install(
    cluster: Cluster, values: dict[str, Any], *, release: str = RELEASE, namespace: str = RELEASE_NAMESPACE
) -> subprocess.CompletedProcess[str]:
    """`helm upgrade --install` the chart and wait until the operator's Deployment is Available."""
    restricted_release_namespace(cluster, namespace)
    return helm(
        cluster,
        "upgrade",
        "--install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        "-",
        "--wait",
        "--timeout=120s",
        input_text=yaml.safe_dump(values),
    )


def uninstall(cluster: Cluster, *, release: str = RELEASE, namespace: str = RELEASE_NAMESPACE) -> None:
    helm(cluster, "uninstall", release, "--namespace", namespace, "--wait", "--timeout=120s")


def service_account_kubeconfig(
    cluster: Cluster, path: Path, *, namespace: str = RELEASE_NAMESPACE, name: str = SERVICE_ACCOUNT
) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a token from the TokenRequest API)."""
    token = cluster.kubectl(
        "create", "token", name, "-n", namespace, f"--duration={TOKEN_DURATION}"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "chart", "context": {"cluster": admin["clusters"][0]["name"], "user": user}}],
        "current-context": "chart",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path
