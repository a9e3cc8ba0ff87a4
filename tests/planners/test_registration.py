"""The external metrics APIService the active replica applies, and whether one found may be taken over,
left alone or removed: tables."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workerfleet.planners.registration import (
    API_SERVICE_NAME,
    Owner,
    Target,
    manifest,
    may_remove,
    may_take,
    needs_apply,
    other_live_peers,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TARGET = Target("workerfleet-system", "workerfleet-metrics-api", 443, b"-----BEGIN CERTIFICATE-----\n")
OWNER = Owner("rbac.authorization.k8s.io/v1", "ClusterRole", "workerfleet-cluster", "uid-1")


def live(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": API_SERVICE_NAME, "uid": "u"},
        "spec": {"service": {"namespace": namespace, "name": name, "port": 443}, **spec},
    }


def test_the_manifest_routes_to_the_service_verifies_tls_and_names_its_owner() -> None:
    applied = manifest(TARGET, OWNER)
    assert applied["metadata"]["name"] == API_SERVICE_NAME
    assert applied["spec"]["service"] == {
        "namespace": "workerfleet-system",
        "name": "workerfleet-metrics-api",
        "port": 443,
    }
    assert base64.b64decode(applied["spec"]["caBundle"]) == TARGET.ca_pem
    assert "insecureSkipTLSVerify" not in applied["spec"]
    [owner] = applied["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "name": "workerfleet-cluster",
        "uid": "uid-1",
    }
    assert "blockOwnerDeletion" not in owner
    assert "ownerReferences" not in manifest(TARGET, None)["metadata"]


@pytest.mark.parametrize(
    ("case", "found", "take", "remove"),
    [
        ("nothing registered", None, True, False),
        ("this operator's", live("workerfleet-system", "workerfleet-metrics-api"), True, True),
        ("a neighbour's metrics Service in the namespace", live("workerfleet-system", "other"), False, False),
        ("this Service's name in another namespace", live("other", "workerfleet-metrics-api"), False, False),
        ("another metrics server's (KEDA)", live("keda", "keda-operator-metrics-apiserver"), False, False),
        ("no service (local)", {"metadata": {"name": API_SERVICE_NAME}, "spec": {}}, False, False),
    ],
)
def test_what_a_replica_may_take_over_or_remove(
    case: str, found: dict[str, Any] | None, take: bool, remove: bool
) -> None:
    assert (may_take(found, TARGET), may_remove(found, TARGET)) == (take, remove), case


def test_an_apply_is_sent_only_when_something_the_operator_sets_differs() -> None:
    desired = manifest(TARGET, OWNER)
    same = {"metadata": {**desired["metadata"], "uid": "u"}, "spec": {**desired["spec"], "extra": 1}}
    assert needs_apply(None, desired)
    assert not needs_apply(same, desired)
    renewed = manifest(Target(TARGET.namespace, TARGET.service, 443, b"new CA"), OWNER)
    assert needs_apply(same, renewed)
    moved = manifest(Target(TARGET.namespace, TARGET.service, 16593, TARGET.ca_pem), OWNER)
    assert needs_apply(same, moved)
    reinstalled = manifest(TARGET, Owner(OWNER.api_version, OWNER.kind, OWNER.name, "uid-2"))
    assert needs_apply(same, reinstalled)


def record(seen_ago: float, lifetime: int = 30) -> dict[str, Any]:
    return {"priority": 1, "lifetime": lifetime, "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


@pytest.mark.parametrize(
    ("case", "status", "others"),
    [
        ("alone", {"me": record(0)}, []),
        ("no status", None, []),
        ("own record already removed, a live peer", {"peer": record(1)}, ["peer"]),
        ("a peer's record expired (killed)", {"me": record(0), "peer": record(31)}, []),
        ("two live peers", {"b": record(0), "a": record(5)}, ["a", "b"]),
    ],
)
def test_other_live_peers(case: str, status: dict[str, Any] | None, others: list[str]) -> None:
    assert other_live_peers(status, "me", NOW) == others, case
