"""One tenant's Prometheus answers 200 MB, nests 200,000 deep, trickles or never answers: its pools get
QueueReachable=False with the bound as reason, a pool on a healthy Prometheus keeps scaling, and the
shared operator's memory stays where it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.cluster import Cluster
from devenv.hostile_prometheus import HostilePrometheus
from devenv.operator import OperatorProcess
from devenv.prometheus import PrometheusServer
from devenv.servers import running
from devenv.waiting import eventually
from e2e.autoscaled_pools import (
    TARGET_PER_REPLICA,
    autoscaled_pool,
    pool_condition,
    pool_replicas,
    resize_job_type,
)
from workerfleet.backends.bounds import BoundReason

HEALTHY_DEPTH = 400
RSS_GROWTH_BOUND_BYTES = 100 * 1024 * 1024
"""Generous against the operator's own variation, and half of one 200 MB answer read whole."""
HOSTILE_QUERIES = {
    "oversized": BoundReason.TOO_LARGE,
    "nested": BoundReason.TOO_DEEP,
    "slow": BoundReason.TIMED_OUT,
    "never": BoundReason.TIMED_OUT,
}


@pytest.fixture
def hostile_prometheus() -> Iterator[HostilePrometheus]:
    yield from running(HostilePrometheus())


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def test_answers_past_the_bounds_fail_their_pools_alone_and_cost_the_operator_no_memory(
    operator: Cluster,
    operator_process: OperatorProcess,
    namespace: str,
    hostile_prometheus: HostilePrometheus,
    prometheus_server: PrometheusServer,
) -> None:
    pid = operator_process.pid
    assert pid is not None
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak RSS (VmHWM) counts from now
    rss_before = _status_bytes(pid, "VmRSS")

    # Given pools whose Prometheus answers past each bound, and one on a healthy Prometheus
    hostile_pools = {
        f"tenant-{query}": autoscaled_pool(
            f"tenant-{query}", {"prometheus": {"address": hostile_prometheus.address, "query": query}}
        )
        for query in HOSTILE_QUERIES
    }
    healthy = autoscaled_pool(
        "healthy", {"prometheus": {"address": prometheus_server.address, "query": f"vector({HEALTHY_DEPTH})"}}
    )
    operator.apply(resize_job_type(), *hostile_pools.values(), healthy, namespace=namespace)

    # Then each hostile pool says its queue is unreachable
    def reachability() -> dict[str, tuple[str, str] | None]:
        return {
            query: pool_condition(operator, namespace, f"tenant-{query}", "QueueReachable")
            for query in HOSTILE_QUERIES
        }

    try:
        eventually(
            lambda: all(condition and condition[0] == "False" for condition in reachability().values()),
            what="QueueReachable=False on every hostile pool",
            timeout=30,
        )
    except AssertionError as error:
        peak = _status_bytes(pid, "VmHWM")
        raise AssertionError(f"{error}: {reachability()}; RSS {rss_before} before, peak {peak}") from None
    # And the healthy pool scales on its depth meanwhile
    target = HEALTHY_DEPTH // TARGET_PER_REPLICA
    eventually(
        lambda: pool_replicas(operator, namespace, "healthy") == target,
        what=f"the healthy pool at {target} replicas",
        timeout=45,
    )
    assert pool_condition(operator, namespace, "healthy", "QueueReachable") == ("True", "DepthRead")
    peak = _status_bytes(pid, "VmHWM")
    print(
        f"\n[bounds] operator RSS {rss_before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB;"
        f" oversized padding taken {hostile_prometheus.sent / 2**20:.0f} MiB"
    )
    # And each hostile pool's reason names the bound its answers passed
    assert reachability() == {query: ("False", reason) for query, reason in HOSTILE_QUERIES.items()}
    # And the operator read none of the 200 MB answers whole: its peak memory stayed near where it was
    assert peak - rss_before < RSS_GROWTH_BOUND_BYTES, (rss_before, peak)
