"""The Helm chart against a real API server: install, upgrade, uninstall; its RBAC is enough and no more."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import chart
from devenv.cluster import Cluster
from devenv.waiting import eventually


@pytest.fixture
def release(crds: Cluster) -> Iterator[tuple[str, str]]:
    """A release of its own (named so the chart uses it as is) and its namespace, removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    name, namespace = f"workerfleet-{suffix}", f"wf-system-{suffix}"
    yield name, namespace
    crds.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _operator_args(cluster: Cluster, namespace: str, deployment: str) -> list[str]:
    body = cluster.get("deployment", deployment, namespace=namespace)
    args: list[str] = body["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_install_upgrade_uninstall(crds: Cluster, namespace: str, release: tuple[str, str]) -> None:
    name, release_namespace = release
    # The cluster's metrics API is the session operator's: this release runs in KEDA mode. Its
    # peering object has a name of its own (the session's release holds the ClusterKopfPeering).
    values: dict[str, Any] = {
        "metricsApi": {"enabled": False},
        "watchNamespaces": [namespace],
        "peering": {"name": name},
    }

    # When the chart is installed into a namespace enforcing `restricted`, watching one namespace
    installed = chart.install(crds, values, release=name, namespace=release_namespace)

    # Then the operator's pod passes admission, becomes Available, and NOTES say what to do next
    assert "kubectl get workerpools -w" in installed.stdout
    deployment = crds.get("deployment", name, namespace=release_namespace)
    assert deployment["status"]["availableReplicas"] == 2  # peering replicas: one acts, one stands by
    assert f"--namespace={namespace}" in _operator_args(crds, release_namespace, name)
    assert crds.get("kopfpeering", name, namespace=namespace) is not None
    assert crds.get("rolebinding", name, namespace=namespace)["roleRef"]["name"] == f"{name}-namespaced"
    assert crds.get("clusterrolebinding", f"{name}-namespaced") is None

    # When it is upgraded to watch the whole cluster with debug logs
    chart.install(
        crds,
        {**values, "watchNamespaces": [], "logLevel": "debug"},
        release=name,
        namespace=release_namespace,
    )

    # Then the per-namespace binding becomes a cluster-wide one and the new pod runs with the new flags
    assert crds.get("rolebinding", name, namespace=namespace) is None
    assert crds.get("clusterrolebinding", f"{name}-namespaced") is not None
    args = _operator_args(crds, release_namespace, name)
    assert "--verbose" in args
    assert not [arg for arg in args if arg.startswith("--namespace")]
    assert crds.get("clusterkopfpeering", name) is not None
    assert crds.get("kopfpeering", name, namespace=namespace) is None
    history = chart.helm(crds, "history", name, "-n", release_namespace, "-o", "json").stdout
    assert [entry["revision"] for entry in json.loads(history)] == [1, 2]

    # When it is uninstalled
    chart.uninstall(crds, release=name, namespace=release_namespace)

    # Then its cluster-wide objects are gone and the CRDs (and so everyone's pools) stay
    for kind, object_name in [
        ("clusterrole", f"{name}-cluster"),
        ("clusterrole", f"{name}-namespaced"),
        ("clusterrolebinding", f"{name}-cluster"),
        ("clusterrolebinding", f"{name}-namespaced"),
        ("clusterkopfpeering", name),
    ]:
        assert crds.get(kind, object_name) is None, (kind, object_name)
    assert crds.get("deployment", name, namespace=release_namespace) is None
    assert crds.get("crd", "workerpools.workerfleet.dev") is not None


def test_bad_values_are_refused_at_install(crds: Cluster, release: tuple[str, str]) -> None:
    name, release_namespace = release
    with pytest.raises(subprocess.CalledProcessError) as refused:
        chart.install(crds, {"peering": {"lifetimeSeconds": 1}}, release=name, namespace=release_namespace)
    assert "lifetimeSeconds" in refused.value.stderr
    assert crds.get("deployment", name, namespace=release_namespace) is None


def _operator_can(cluster: Cluster, *request: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *request, f"--as={chart.OPERATOR_USER}", check=False)
    return result.stdout.strip() == "yes"


def test_the_operator_identity_holds_what_it_needs_and_nothing_more(
    operator_chart: Cluster, namespace: str
) -> None:
    ns = namespace
    # It may read the Secrets the values name, by name only
    for secret in chart.QUEUE_CREDENTIALS_SECRETS:
        assert _operator_can(operator_chart, "get", f"secrets/{secret}", "-n", ns)
    # It may not read other Secrets, list or watch them, or change them
    for request in [
        ("get", "secrets/db-password", "-n", ns),
        ("list", "secrets", "-n", ns),
        ("watch", "secrets", "-A"),
        ("update", f"secrets/{chart.QUEUE_CREDENTIALS_SECRETS[0]}", "-n", ns),
    ]:
        assert not _operator_can(operator_chart, *request), request
    # It may not grant itself more, nor reach into workloads
    for request in [
        ("create", "clusterrolebindings"),
        ("create", "clusterroles"),
        ("bind", "clusterroles"),
        ("escalate", "roles", "-n", ns),
        ("impersonate", "serviceaccounts", "-n", ns),
        ("create", "pods/exec", "-n", ns),
        ("create", "pods", "-n", ns),
        ("delete", "namespaces"),
        ("create", "customresourcedefinitions"),
        ("delete", "workerpools", "-n", ns),
        ("get", "workerpools", "--subresource=status", "-n", ns),  # it reads pools, writes their status
        ("patch", "jobtypes", "-n", ns),  # a JobType's spec is its owner's: the operator writes its status
    ]:
        assert not _operator_can(operator_chart, *request), request
    # And it holds what the reconciler uses
    for request in [
        ("patch", "deployments", "-n", ns),
        ("patch", "workerpools", "--subresource=status", "-n", ns),
        ("patch", "jobtypes", "--subresource=status", "-n", ns),
        ("create", "roles", "-n", ns),
        ("list", "customresourcedefinitions"),
        ("create", "subjectaccessreviews"),
        ("get", "configmaps/extension-apiserver-authentication", "-n", "kube-system"),
        ("watch", "clusterkopfpeerings.kopf.dev"),
        ("patch", "clusterkopfpeerings.kopf.dev/workerfleet"),
        ("get", "clusterkopfpeerings.kopf.dev/workerfleet"),
    ]:
        assert _operator_can(operator_chart, *request), request
    # Its peering rights reach its own peering object only
    assert not _operator_can(operator_chart, "patch", "clusterkopfpeerings.kopf.dev/someone-else")
    assert not _operator_can(operator_chart, "delete", "clusterkopfpeerings.kopf.dev/workerfleet")


def test_a_job_type_asking_for_more_than_the_chart_delegates_is_refused_before_any_role_is_written(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a JobType whose workers would read Secrets, which the chart does not delegate
    job_type = {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "leaky"},
        "spec": {
            "lane": "fast",
            "timeoutSeconds": 30,
            "permissions": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        },
    }
    pool = {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "leaky"},
        "spec": {
            "jobTypes": ["leaky"],
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
            "queue": {"redis": {"address": "127.0.0.1:6379", "list": "jobs:leaky"}},
        },
    }
    text = "\n---\n".join(yaml.safe_dump(document) for document in (job_type, pool))
    operator.kubectl("apply", "-n", ns, "-f", "-", input_text=text)

    # Then the operator refuses the rule before writing a Role, and the pool says which rule
    def ready_condition() -> dict[str, Any] | None:
        body = operator.get("workerpool", "leaky", namespace=ns) or {}
        conditions = (body.get("status") or {}).get("conditions") or []
        return next(
            (c for c in conditions if c["type"] == "Ready" and c["reason"] == "PermissionNotDelegable"), None
        )

    condition = eventually(ready_condition, what="Ready=False PermissionNotDelegable", timeout=60)
    assert condition["status"] == "False"
    assert 'JobType leaky: get on secrets (group "")' in condition["message"]
    assert operator.get("role", "leaky-worker", namespace=ns) is None
    assert not _operator_can(operator, "get", "secrets/anything", "-n", ns)


def _patch_pod_as(kubeconfig: Path, namespace: str, pod: str, labels: dict[str, str | None]) -> str | None:
    """A merge patch of the pod's labels with the kubeconfig's token (kubectl would GET the pod first,
    which the operator may not); None when admitted, else the API server's refusal."""
    config = json.loads(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    request = urllib.request.Request(  # noqa: S310  (the local API server, https)
        f"{cluster['server']}/api/v1/namespaces/{namespace}/pods/{pod}",
        data=json.dumps({"metadata": {"labels": labels}}).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {user['token']}", "Content-Type": "application/merge-patch+json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30):  # noqa: S310
            return None
    except urllib.error.HTTPError as error:
        return str(error.read().decode())


def test_the_operator_may_change_only_the_active_label_of_its_own_pods(
    operator_chart: Cluster, tmp_path: Path
) -> None:
    # Given one of the chart's operator pods, and the operator's own token
    selector = f"app.kubernetes.io/name={chart.RELEASE},app.kubernetes.io/instance={chart.RELEASE}"
    listed = operator_chart.get("pods", "-l", selector, namespace=chart.RELEASE_NAMESPACE)
    pod = listed["items"][0]["metadata"]["name"]
    kubeconfig = chart.service_account_kubeconfig(operator_chart, tmp_path / "operator.kubeconfig")

    def patch(labels: dict[str, str | None]) -> str | None:
        return _patch_pod_as(kubeconfig, chart.RELEASE_NAMESPACE, pod, labels)

    # When it sets and removes the label it manages, the API server admits it
    assert patch({"workerfleet.dev/active": "true"}) is None
    assert patch({"workerfleet.dev/active": None}) is None
    # When it tries any other label (one a Service might select), it is refused
    refused = patch({"example.com/selected-by": "another-service"})
    assert refused is not None
    assert "only the workerfleet.dev/active label" in refused
