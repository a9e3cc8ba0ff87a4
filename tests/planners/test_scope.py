"""Namespaces the operator serves, and the addresses pools may point it at."""

from __future__ import annotations

import pytest

from workerfleet.api.workerpool import Queue
from workerfleet.planners.scaling import ScalingReason
from workerfleet.planners.scope import (
    address_refusal,
    credentials_refusal,
    prometheus_allowed,
    queue_address_allowed,
    refused_queue_address,
    serves_namespace,
)


@pytest.mark.parametrize(
    ("namespace", "watched", "served"),
    [
        ("team-a", [], True),
        ("kube-system", [], False),
        ("kube-public", [], False),
        ("kube-node-lease", [], False),
        ("kube-system", ["kube-system"], True),
        ("team-a", ["team-b"], False),
        ("team-b", ["team-b"], True),
    ],
)
def test_system_namespaces_are_served_only_when_named(
    namespace: str, watched: list[str], served: bool
) -> None:
    assert serves_namespace(namespace, watched) is served


@pytest.mark.parametrize(
    ("address", "allowlist", "allowed"),
    [
        ("redis.team-a:6379", [], True),
        ("redis.team-a:6379", ["redis.team-a:6379"], True),
        ("redis.team-a:6380", ["redis.team-a:6379"], False),
        ("redis.team-a:6380", ["redis.team-a"], True),
        ("REDIS.team-a:6379", ["redis.team-a"], True),
        ("redis.queues.svc:6379", ["*.queues.svc:6379"], True),
        ("redis.queues.svc:6380", ["*.queues.svc:6379"], False),
        ("queues.svc:6379", ["*.queues.svc"], False),
        ("evilqueues.svc:6379", ["*.queues.svc"], False),
        ("10.0.0.1:6379", ["redis.team-a"], False),
        ("[::1]:6379", ["127.0.0.1"], False),
    ],
)
def test_queue_addresses_match_the_allowlist(address: str, allowlist: list[str], allowed: bool) -> None:
    assert queue_address_allowed(address, allowlist) is allowed


@pytest.mark.parametrize(
    ("address", "allowlist", "allowed"),
    [
        ("http://anything:9090", [], True),
        ("https://prom.monitoring:9090", ["https://prom.monitoring:9090"], True),
        ("https://prom.monitoring:9090/", ["https://prom.monitoring:9090"], True),
        ("http://prom.monitoring:9090", ["https://prom.monitoring:9090"], False),
        ("https://prom.monitoring:9091", ["https://prom.monitoring:9090"], False),
        ("https://prom.monitoring:9090.evil", ["https://prom.monitoring:9090"], False),
        ("https://proxy/team-a/prom", ["https://proxy/team-a"], True),
        ("https://proxy/team-ab", ["https://proxy/team-a"], False),
        ("https://proxy/team-b", ["https://proxy/team-a"], False),
    ],
)
def test_prometheus_addresses_match_the_allowlist(address: str, allowlist: list[str], allowed: bool) -> None:
    assert prometheus_allowed(address, allowlist) is allowed


def test_a_refused_address_names_it_and_the_chart_value() -> None:
    queue = Queue.model_validate({"redis": {"address": "evil:6379", "list": "jobs"}})
    assert refused_queue_address(queue, ["redis.team-a"], []) == (
        "queue address evil:6379 is not in the operator's allowlist (chart value allowedAddresses.queues):"
        " use an allowed queue, or ask the cluster admin"
    )
    prometheus = Queue.model_validate({"prometheus": {"address": "http://evil:9090", "query": "q"}})
    assert "allowedAddresses.prometheus" in (refused_queue_address(prometheus, [], ["https://prom"]) or "")
    assert refused_queue_address(queue, [], []) is None


def test_an_address_refusal_carries_the_reason_the_conditions_give() -> None:
    queue = Queue.model_validate({"redis": {"address": "evil:6379", "list": "jobs"}})
    refusal = address_refusal(queue, ["redis.team-a"], [])
    assert refusal == (ScalingReason.ADDRESS_NOT_ALLOWED, refused_queue_address(queue, ["redis.team-a"], []))
    assert address_refusal(queue, ["evil"], []) is None


ROLE = "workerfleet-queue-credentials"


@pytest.mark.parametrize(
    ("secrets", "readable", "denied"),
    [
        ([], {}, None),
        (["team-redis"], {"team-redis": True}, None),
        (["team-redis"], {"team-redis": False}, "Secret team-a/team-redis."),
        # one not readable of two is enough to refuse; only that one is named
        (["ca", "team-redis"], {"ca": True, "team-redis": False}, "Secret team-a/team-redis."),
        (["ca", "team-redis"], {"ca": False, "team-redis": False}, "Secret team-a/ca, team-a/team-redis."),
        # a Secret nobody looked at counts as not readable
        (["team-redis"], {}, "Secret team-a/team-redis."),
    ],
)
def test_keda_is_given_only_secrets_of_a_namespace_that_opted_in(
    secrets: list[str], readable: dict[str, bool], denied: str | None
) -> None:
    refusal = credentials_refusal("team-a", secrets, readable, ROLE)
    if denied is None:
        assert refusal is None
        return
    assert refusal is not None
    reason, message = refusal
    assert reason == ScalingReason.CREDENTIALS_NOT_GRANTED
    assert f"the operator may not read {denied}" in message
    assert f"a RoleBinding in team-a of ClusterRole {ROLE}" in message
