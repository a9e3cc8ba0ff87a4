"""Fixtures for tests against the real local control plane."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv import chart
from devenv.cluster import Cluster
from devenv.operator import OperatorProcess, install_crds, operator_as_chart_identity
from devenv.prometheus import PrometheusServer
from devenv.servers import RabbitMQServer, RedisServer, running
from e2e.canary_rig import Rig


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The running local cluster; brought up (and torn down afterwards) when none is running.

    Set WORKERFLEET_KEEP_CLUSTER=1 to leave a cluster this session started running for inspection.
    """
    existing = Cluster()
    if existing.is_ready():
        yield existing
        return
    existing.up()
    try:
        yield existing
    finally:
        if not os.environ.get("WORKERFLEET_KEEP_CLUSTER"):
            existing.down()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards with everything in it."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    """The cluster with workerfleet's CRDs installed (cluster-scoped, so left in place)."""
    install_crds(cluster)
    return cluster


@pytest.fixture(scope="session")
def operator_chart(crds: Cluster) -> Iterator[Cluster]:
    """The Helm chart installed with the e2e suite's values; uninstalled at the end of the session."""
    chart.install(crds, chart.E2E_VALUES)
    try:
        yield crds
    finally:
        chart.uninstall(crds)


@pytest.fixture(scope="session")
def operator_process(operator_chart: Cluster) -> Iterator[OperatorProcess]:
    """The operator running under the chart's ServiceAccount identity, so every scenario proves its RBAC.

    The process runs on this host (pods are simulated) with a token of the chart's ServiceAccount;
    it can be killed and started again; its log is in the cluster's logs.
    """
    with operator_as_chart_identity(operator_chart, operator_chart.layout.logs / "operator.log") as process:
        yield process


@pytest.fixture(scope="session")
def operator(operator_process: OperatorProcess) -> Cluster:
    """The cluster with the workerfleet operator running against it."""
    return operator_process.cluster


@pytest.fixture
def restricted_namespace(namespace: str, cluster: Cluster) -> str:
    """A fresh namespace that enforces the restricted Pod Security Standard."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return namespace


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a loopback port, for the whole session."""
    yield from running(RedisServer(tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """A real RabbitMQ node of its own on loopback ports, for the whole session."""
    yield from running(RabbitMQServer(tmp_path_factory.mktemp("rabbitmq")))


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus on a loopback port scraping the targets tests give it, for the whole session."""
    yield from running(PrometheusServer(tmp_path_factory.mktemp("prometheus")))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server this test alone may stop and start (on the same port)."""
    yield from running(RedisServer(tmp_path / "redis"))


@pytest.fixture
def rig(
    operator: Cluster,
    namespace: str,
    redis_server: RedisServer,
    prometheus_server: PrometheusServer,
    tmp_path: Path,
) -> Iterator[Rig]:
    """A pool named thumbs under canary test (e2e/canary_rig.py); its workers and producer stopped after."""
    started = Rig(operator, namespace, "thumbs", redis_server, prometheus_server, tmp_path)
    try:
        yield started
    finally:
        started.stop()
