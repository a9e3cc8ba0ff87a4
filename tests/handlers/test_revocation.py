"""Revocation first: what the reconciler writes to a pool's Role when its JobTypes grant less, against
an in-memory API (tests/kube/fake_api.py)."""

from __future__ import annotations

from typing import Any, cast

from tests.kube.fake_api import FakeApi
from workerfleet.handlers.workerpool import _revoke_first
from workerfleet.kube.client import Kube
from workerfleet.kube.rest import Rest
from workerfleet.planners.children import PoolRef, worker_role

POOL = PoolRef("thumbs", "media", "pool-uid")
CONFIGMAPS_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
SECRETS_GET = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
ROLE = "rbac.authorization.k8s.io/v1/Role/media/thumbs-worker"
BINDING = "rbac.authorization.k8s.io/v1/RoleBinding/media/thumbs-worker"


def cluster_with_role(
    rules: list[dict[str, Any]], role: dict[str, Any] | None = None
) -> tuple[FakeApi, Kube]:
    api = FakeApi()
    client = Kube(cast(Rest, api))
    pending = client.check(role or worker_role(POOL, rules), POOL.uid)
    assert pending is not None
    client.write(pending)
    binding = {
        **worker_role(POOL, []),
        "kind": "RoleBinding",
        "roleRef": {"kind": "Role", "name": "thumbs-worker"},
    }
    del binding["rules"]
    api.someone_creates(binding, manager="workerfleet")
    api.requests.clear()
    return api, Kube(cast(Rest, api))  # a fresh client: nothing remembered, as after a restart


def writes(api: FakeApi) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in api.requests if method != "GET"]


def test_a_rule_no_job_type_grants_any_more_is_taken_from_the_role_with_its_uid_as_precondition() -> None:
    api, client = cluster_with_role([CONFIGMAPS_GET, SECRETS_GET])
    uid = api.objects[ROLE]["metadata"]["uid"]

    assert _revoke_first(client, POOL, [SECRETS_GET], verify=False) is None

    assert api.objects[ROLE]["rules"] == [SECRETS_GET]
    assert writes(api) == [("PATCH", ROLE)]
    assert api.requests[-1][2]["metadata"]["uid"] == uid


def test_when_nothing_is_granted_the_binding_and_the_role_go() -> None:
    api, client = cluster_with_role([CONFIGMAPS_GET])

    assert _revoke_first(client, POOL, [], verify=False) is None

    assert writes(api) == [("DELETE", BINDING), ("DELETE", ROLE)]
    assert ROLE not in api.objects
    assert BINDING not in api.objects


def test_a_role_that_holds_what_is_granted_or_less_is_not_written() -> None:
    for granted in ([CONFIGMAPS_GET], [CONFIGMAPS_GET, SECRETS_GET]):
        api, client = cluster_with_role([CONFIGMAPS_GET])
        assert _revoke_first(client, POOL, granted, verify=False) is None
        assert writes(api) == [], granted
        assert api.objects[ROLE]["rules"] == [CONFIGMAPS_GET]


def test_a_role_the_pool_does_not_control_is_left_alone() -> None:
    api = FakeApi()
    theirs = api.someone_creates(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "thumbs-worker", "namespace": "media"},
            "rules": [CONFIGMAPS_GET],
        }
    )
    client = Kube(cast(Rest, api))

    assert _revoke_first(client, POOL, [SECRETS_GET], verify=False) is None
    assert _revoke_first(client, POOL, [], verify=False) is None

    assert writes(api) == []
    assert api.objects[ROLE] == theirs
