"""What `Kube.write` sends for a child, against an in-memory API: created when absent (never merged
into an object someone else made in between), applied with a UID precondition when it exists."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tests.kube.fake_api import FakeApi
from workerfleet.kube.client import FIELD_MANAGER, Kube, NameConflictError
from workerfleet.kube.rest import ApiError, Rest

POOL_UID = "pool-uid"


def policies(data: str = "{}") -> dict[str, Any]:
    reference = {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "name": "thumbs",
        "uid": POOL_UID,
        "controller": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "thumbs-policies", "namespace": "media", "ownerReferences": [reference]},
        "data": {"policies.json": data},
    }


FOREIGN = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "thumbs-policies", "namespace": "media"},
    "data": {"theirs": "yes"},
}
PATH = "v1/ConfigMap/media/thumbs-policies"


def test_a_child_found_absent_is_created_and_its_fields_recorded_as_applied() -> None:
    api = FakeApi()
    client = Kube(cast(Rest, api))
    pending = client.check(policies(), POOL_UID)
    assert pending is not None
    client.write(pending)
    assert [(method, path) for method, path, _ in api.requests] == [
        ("GET", PATH),
        ("POST", "v1/ConfigMap/media"),
        ("PATCH", PATH),
    ]
    [entry] = api.objects[PATH]["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == (FIELD_MANAGER, "Apply")
    assert client.check(policies(), POOL_UID, verify=True) is None  # written once, held since


def test_an_object_made_under_the_name_between_check_and_write_is_not_merged_into() -> None:
    api = FakeApi()
    client = Kube(cast(Rest, api))
    pending = client.check(policies(), POOL_UID)
    assert pending is not None
    theirs = api.someone_creates(FOREIGN)

    with pytest.raises(NameConflictError) as conflict:
        client.write(pending)

    assert api.objects[PATH] == theirs
    assert (conflict.value.kind, conflict.value.name) == ("ConfigMap", "thumbs-policies")
    assert conflict.value.holder == "managed by kubectl-create"


def test_a_taken_name_found_at_check_time_names_who_has_it() -> None:
    api = FakeApi()
    api.someone_creates(FOREIGN, manager="helm")
    with pytest.raises(NameConflictError, match=r"ConfigMap thumbs-policies .*managed by helm"):
        Kube(cast(Rest, api)).check(policies(), POOL_UID)


def test_a_child_replaced_between_check_and_write_is_not_applied_over() -> None:
    api = FakeApi()
    client = Kube(cast(Rest, api))
    first = client.check(policies(), POOL_UID)
    assert first is not None
    client.write(first)
    update = client.check(policies('{"jobTypes": {}}'), POOL_UID, verify=True)
    assert update is not None
    del api.objects[PATH]
    theirs = api.someone_creates(FOREIGN)

    with pytest.raises(ApiError) as refused:
        client.write(update)

    assert refused.value.status == 409
    assert api.objects[PATH] == theirs
    assert api.requests[-1][2]["metadata"]["uid"] == update.uid


def test_a_create_that_finds_the_pools_own_child_updates_it() -> None:
    # A memory that lagged: the child is there and the pool's, so it is applied over with its UID.
    api = FakeApi()
    client = Kube(cast(Rest, api))
    pending = client.check(policies(), POOL_UID)
    assert pending is not None
    ours = api.someone_creates(policies("old"), manager=FIELD_MANAGER)

    client.write(pending)

    assert api.objects[PATH]["data"] == {"policies.json": "{}"}
    assert api.objects[PATH]["metadata"]["uid"] == ours["metadata"]["uid"]
