"""The local control plane itself: versions, aggregation layer, idempotent start, pinned tools."""

from __future__ import annotations

import json
import subprocess

from devenv import toolchain
from devenv.cluster import COMPONENTS, Cluster
from devenv.waiting import eventually


def test_server_reports_the_pinned_version(cluster: Cluster) -> None:
    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    server = versions["serverVersion"]
    assert server["gitVersion"] == toolchain.KUBERNETES_VERSION
    assert (server["major"], server["minor"]) == ("1", toolchain.KUBERNETES_VERSION.split(".")[1])


def test_aggregation_layer_is_configured_for_extension_apiservers(cluster: Cluster) -> None:
    # Extension API servers (the external metrics adapter) read the front-proxy CA from here.
    config = json.loads(
        cluster.kubectl(
            "get", "configmap", "extension-apiserver-authentication", "-n", "kube-system", "-o", "json"
        ).stdout
    )["data"]
    assert "BEGIN CERTIFICATE" in config["requestheader-client-ca-file"]
    assert json.loads(config["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(config["requestheader-username-headers"]) == ["X-Remote-User"]


def test_cluster_up_again_starts_nothing_new(cluster: Cluster) -> None:
    pids = {name: cluster.layout.pid(name).read_text() for name in COMPONENTS}
    cluster.up()
    assert {name: cluster.layout.pid(name).read_text() for name in COMPONENTS} == pids
    assert cluster.is_ready()


def test_status_reports_every_component_healthy(cluster: Cluster) -> None:
    rows = dict(cluster.status())
    assert set(rows) == set(COMPONENTS)
    for name, state in rows.items():
        assert "healthy" in state, name
        assert "unhealthy" not in state, name


def test_pinned_helm_reaches_the_cluster(cluster: Cluster, namespace: str) -> None:
    helm = toolchain.binaries()["helm"].path
    result = subprocess.run(
        [str(helm), "list", "-n", namespace, "-o", "json", f"--kubeconfig={cluster.kubeconfig}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == []
    version = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith(toolchain.HELM_VERSION)


def test_audit_log_records_every_write_with_its_author(cluster: Cluster, namespace: str) -> None:
    # Given a write by the admin in a fresh namespace
    cluster.kubectl("create", "configmap", "audited", "-n", namespace, "--from-literal=a=b")
    cluster.kubectl("get", "configmap", "audited", "-n", namespace)

    # Then the audit log holds that create (and no read), attributed to the admin
    writes = eventually(
        lambda: cluster.audit_writes(namespace=namespace, user="workerfleet-admin") or None,
        what="the audited create",
        timeout=20,
    )
    assert [(w["verb"], w["objectRef"]["resource"], w["objectRef"].get("name")) for w in writes] == [
        ("create", "configmaps", "audited")
    ]
