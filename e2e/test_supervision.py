"""A pool's queue poller survives the API server refusing it: it says so on the pool, and comes back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from devenv.cluster import Cluster
from devenv.servers import RedisServer
from devenv.waiting import eventually
from e2e.autoscaled_pools import (
    RedisListBacklog,
    autoscaled_pool,
    event_reasons,
    pool_condition,
    pool_replicas,
    resize_job_type,
)

OPERATOR_ROLE = "workerfleet-namespaced"


@contextmanager
def _without_permission(cluster: Cluster, resource: str, verb: str) -> Iterator[None]:
    """The chart's ClusterRole without `verb` on `resource` until the block ends; then as it was."""
    role = json.loads(cluster.kubectl("get", "clusterrole", OPERATOR_ROLE, "-o", "json").stdout)
    rules: list[dict[str, Any]] = role["rules"]
    reduced = []
    for rule in rules:
        if rule.get("resources") == [resource] and verb in rule["verbs"]:
            verbs = [v for v in rule["verbs"] if v != verb]
            if verbs:
                reduced.append({**rule, "verbs": verbs})
        else:
            reduced.append(rule)
    assert reduced != rules, f"the chart's ClusterRole grants no {verb} on {resource}"

    def set_rules(value: list[dict[str, Any]]) -> None:
        patch = json.dumps([{"op": "replace", "path": "/rules", "value": value}])
        cluster.kubectl("patch", "clusterrole", OPERATOR_ROLE, "--type=json", "-p", patch)

    set_rules(reduced)
    try:
        yield
    finally:
        set_rules(rules)


def test_a_poller_refused_by_the_api_server_says_so_and_resumes_when_allowed(
    operator: Cluster, namespace: str, redis_server: RedisServer
) -> None:
    # Given an autoscaled pool asleep at zero replicas over an empty queue
    backlog = RedisListBacklog(redis_server)
    operator.apply(resize_job_type(), autoscaled_pool("thumbs", backlog.queue_spec), namespace=namespace)
    eventually(
        lambda: (
            pool_condition(operator, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth")
        ),
        what="scaling on depth",
        timeout=60,
    )
    assert pool_replicas(operator, namespace, "thumbs") == 0

    # When the operator may no longer patch pools, and jobs arrive (so it must wake the pool)
    with _without_permission(operator, "workerpools", "patch"):
        backlog.push(200)

        # Then the pool says that polling fails, and why, with a Warning Event; it stays asleep
        eventually(
            lambda: (
                pool_condition(operator, namespace, "thumbs", "ScalingActive") == ("False", "PollingFailed")
            ),
            what="ScalingActive=False (PollingFailed)",
            timeout=30,
        )
        assert "PollingFailed" in event_reasons(operator, namespace, "thumbs")
        assert pool_replicas(operator, namespace, "thumbs") == 0

    # When the permission is back: Then the same poller wakes the pool and the condition clears
    allowed = time.monotonic()
    eventually(lambda: pool_replicas(operator, namespace, "thumbs") >= 1, what="the pool woken", timeout=30)
    print(f"\npoller back {time.monotonic() - allowed:.1f}s after the permission was restored")
    eventually(
        lambda: (
            pool_condition(operator, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth")
        ),
        what="ScalingActive=True again",
        timeout=30,
    )
    backlog.drain()
