"""Which pools' workers the operator reads, and which of their pods it reads."""

from __future__ import annotations

from typing import Any

import pytest

from workerfleet.handlers.breaker import _ready_addresses, _watched, _workers_worth_reading


@pytest.mark.parametrize(
    ("spec", "status", "watched"),
    [
        ({"replicas": 1}, {}, False),
        ({"replicas": 3}, {}, True),
        ({"replicas": 1, "autoscaling": {"maxReplicas": 4}}, {}, True),
        ({"replicas": 1, "rollout": {"canary": {}}}, {}, True),
        ({"replicas": 1, "circuitBreaker": {"maxFailureRatio": 0.5}}, {}, True),
        ({"replicas": 1}, {"circuitBreaker": {"state": "Open"}}, True),
        ({"replicas": 3, "worker": {"runtime": "none"}}, {}, False),
    ],
)
def test_watched_pools(spec: dict[str, Any], status: dict[str, Any], watched: bool) -> None:
    assert _watched({"spec": spec, "status": status}) is watched


@pytest.mark.parametrize(
    ("spec", "status", "capacity_wanted", "read"),
    [
        # An autoscaled pool resting at one worker: nothing to spare, no breaker, no rate limit.
        ({"autoscaling": {"maxReplicas": 4}}, {"replicas": 1}, False, False),
        ({"autoscaling": {"maxReplicas": 4}}, {}, False, False),
        ({"autoscaling": {"maxReplicas": 4}}, {"replicas": 2}, False, True),
        ({"autoscaling": {"maxReplicas": 4}}, {"replicas": 1}, True, True),
        ({"circuitBreaker": {"maxFailureRatio": 0.5}}, {"replicas": 1}, False, True),
        ({"replicas": 1}, {"replicas": 1, "circuitBreaker": {"state": "Open"}}, False, True),
        ({"replicas": 1, "rollout": {"canary": {}}}, {"replicas": 2, "canaryReplicas": 1}, False, True),
    ],
)
def test_a_round_reads_the_workers_only_when_there_is_something_to_read_for(
    spec: dict[str, Any], status: dict[str, Any], capacity_wanted: bool, read: bool
) -> None:
    assert _workers_worth_reading({"spec": spec, "status": status}, capacity_wanted) is read


def pod(name: str, ip: str | None, ready: bool, **metadata: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": {"name": name, **metadata}, "status": {"podIP": ip, "conditions": conditions}}


def test_only_ready_pods_with_an_ip_and_not_leaving_are_read() -> None:
    pods = [
        pod("a", "127.244.0.5", True, annotations={"controller.kubernetes.io/pod-deletion-cost": "2"}),
        pod("b", "127.244.0.6", False),
        pod("c", None, True),
        pod("d", "127.244.0.7", True, deletionTimestamp="2026-01-01T00:00:00Z"),
    ]
    addresses, costs = _ready_addresses(pods, 8000)
    assert addresses == {"a": "127.244.0.5:8000"}
    assert costs == {"a": "2"}
