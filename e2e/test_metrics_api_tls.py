"""The API server verifies the operator's metrics API, and keeps reaching it when its certificate is
renewed by a new CA (as cert-manager or a `helm upgrade` after deleting the Secret would do), with no
restart of the operator."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from devenv.chart import CHART, helm
from devenv.cluster import Cluster
from devenv.operator import (
    METRICS_API_PORT,
    METRICS_API_SERVICE,
    OperatorProcess,
    metrics_api_certificate,
)
from devenv.pki import Pair
from devenv.waiting import eventually

DISCOVERY = "/apis/external.metrics.k8s.io/v1beta1"
RELEASE = "tls"
SECRET = "tls-workerfleet-metrics-api-tls"
CA_CONFIG_MAP = "tls-workerfleet-metrics-api-ca"


def _rendered(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The chart's default rendering against the real API server (so `lookup` sees it), as an
    install or upgrade would; by kind, the generated Secret and the ConfigMap of the CA the operator
    registers the APIService with."""
    result = helm(cluster, "template", RELEASE, str(CHART), "--namespace", namespace, "--dry-run=server")
    documents = [document for document in yaml.safe_load_all(result.stdout) if document]
    [secret] = [d for d in documents if d["kind"] == "Secret" and d["metadata"]["name"] == SECRET]
    [ca] = [d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == CA_CONFIG_MAP]
    return {"Secret": secret, "ConfigMap": ca}


def _ca_bundle(rendered: dict[str, Any]) -> str:
    return base64.b64encode(rendered["ConfigMap"]["data"]["ca.crt"].encode()).decode()


def _discovered(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "--raw", DISCOVERY, check=False).returncode == 0


def _verified_by(ca: Path) -> bool:
    """Whether the operator completes a handshake that checks its certificate against `ca`."""
    namespace, service = METRICS_API_SERVICE
    client = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", METRICS_API_PORT), timeout=5) as raw,
            client.wrap_socket(raw, server_hostname=f"{service}.{namespace}.svc"),
        ):
            return True
    except (ssl.SSLError, OSError):
        return False


def _replace_file(path: Path, content: bytes) -> None:
    """One file replaced in one rename, as the kubelet updates a ConfigMap volume."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_bytes(content)
    staged.replace(path)


def _replace(target: Pair, source: tuple[bytes, bytes]) -> None:
    """Both files replaced, each in one rename, as the kubelet updates a Secret volume."""
    for path, content in ((target.cert, source[0]), (target.key, source[1])):
        staged = path.with_name(f".{path.name}.new")
        staged.write_bytes(content)
        staged.replace(path)


def test_the_aggregator_verifies_the_operator_and_follows_a_renewed_certificate(
    operator: Cluster, operator_process: OperatorProcess
) -> None:
    # Given the APIService verifying the operator's certificate against the CA that signed it
    spec = json.loads(
        operator.kubectl("get", "apiservice", "v1beta1.external.metrics.k8s.io", "-o", "json").stdout
    )["spec"]
    assert "insecureSkipTLSVerify" not in spec
    assert spec["caBundle"]
    eventually(lambda: _discovered(operator), what="the metrics API discovered through the aggregator")
    ca, serving = metrics_api_certificate(operator)
    assert _verified_by(ca.cert)
    kept = (serving.cert.read_bytes(), serving.key.read_bytes())
    pid = operator_process.pid

    # When a new CA renews the certificate: the operator's files and the CA file it registers the
    # APIService with (the chart's ConfigMap)
    new_ca, renewed = metrics_api_certificate(operator, authority=f"metrics-api-ca-{uuid.uuid4().hex[:6]}")
    kept_ca = ca.cert.read_bytes()
    previous_ca = ca.cert.with_name("previous-ca.crt")
    previous_ca.write_bytes(kept_ca)
    try:
        _replace(serving, (renewed.cert.read_bytes(), renewed.key.read_bytes()))
        _replace_file(ca.cert, new_ca.cert.read_bytes())
        started = time.monotonic()

        # Then the operator serves the renewed certificate, and the aggregator reaches it, no restart
        eventually(lambda: _verified_by(new_ca.cert), what="the renewed certificate served", timeout=60)
        print(f"renewed certificate served {time.monotonic() - started:.1f}s after the files changed")
        eventually(lambda: _discovered(operator), what="discovery through the new CA", timeout=60)
        assert not _verified_by(previous_ca)
        assert operator_process.pid == pid
    finally:
        _replace(serving, kept)
        _replace_file(ca.cert, kept_ca)
        eventually(lambda: _verified_by(ca.cert), what="the original certificate served again", timeout=60)
        eventually(lambda: _discovered(operator), what="discovery through the original CA", timeout=60)


def test_an_upgrade_keeps_the_ca_and_certificate_the_install_made(cluster: Cluster, namespace: str) -> None:
    # Given a default install's generated certificate Secret in its namespace
    installed = _rendered(cluster, namespace)
    assert _ca_bundle(installed) == installed["Secret"]["data"]["ca.crt"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(installed["Secret"]))

    # When the chart is rendered again, as `helm upgrade` does
    upgraded = _rendered(cluster, namespace)

    # Then the certificate, key and CA are the same, and the APIService still trusts that CA
    assert upgraded["Secret"]["data"] == installed["Secret"]["data"]
    assert _ca_bundle(upgraded) == installed["Secret"]["data"]["ca.crt"]
