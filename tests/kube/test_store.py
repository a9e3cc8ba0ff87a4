"""What the operator remembers of objects: watched versions only move forward, unwatched children are
trusted for a bounded time."""

from __future__ import annotations

from typing import Any

from workerfleet.kube.store import ABSENT, AppliedChildren, WatchedObjects

KEY = ("apps/v1", "Deployment", "media", "thumbs")


def _deployment(version: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "thumbs",
            "namespace": "media",
            "resourceVersion": version,
            "managedFields": [{"manager": "workerfleet", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"replicas": replicas},
    }


def test_an_object_never_seen_is_unknown_not_absent() -> None:
    assert WatchedObjects().lookup(KEY) == (False, None)


def test_the_newest_version_wins_whatever_order_it_arrives_in() -> None:
    watched = WatchedObjects()
    watched.remember(_deployment("12", 3))
    watched.remember(_deployment("9", 1))  # a late watch event after the write's response
    seen, body = watched.lookup(KEY)
    assert seen
    assert body is not None
    assert body["spec"]["replicas"] == 3


def test_a_deletion_is_remembered_and_a_recreation_replaces_it() -> None:
    watched = WatchedObjects()
    watched.remember(_deployment("12", 3))
    watched.remember_deleted(_deployment("13", 3))
    assert watched.lookup(KEY) == (True, None)
    watched.remember(_deployment("20", 1))
    assert watched.lookup(KEY)[1] is not None


def test_a_read_that_found_nothing_does_not_hide_an_object_a_watch_has_shown() -> None:
    watched = WatchedObjects()
    watched.remember(_deployment("12", 3))
    watched.remember_read(KEY, None)
    assert watched.lookup(KEY) == (False, None)


def test_bodies_are_kept_without_managed_fields_and_handed_out_as_copies() -> None:
    watched = WatchedObjects()
    watched.remember(_deployment("12", 3))
    _, body = watched.lookup(KEY)
    assert body is not None
    assert "managedFields" not in body["metadata"]
    body["spec"]["replicas"] = 99
    assert watched.lookup(KEY)[1] == {**_deployment("12", 3), "metadata": body["metadata"]}


def test_the_operators_own_field_sets_are_kept_as_text_and_nobody_elses() -> None:
    watched = WatchedObjects("workerfleet")
    deployment = _deployment("12", 3)
    deployment["metadata"]["managedFields"] += [
        {"manager": "kubectl", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "workerfleet", "subresource": "status", "fieldsV1": {"f:status": {}}},
    ]
    watched.remember(deployment)
    _, body = watched.lookup(KEY)
    assert body is not None
    assert body["metadata"]["managedFields"] == [
        {"manager": "workerfleet", "operation": None, "fieldsV1": '{"f:spec":{}}'}
    ]
    assert deployment["metadata"]["managedFields"][0]["fieldsV1"] == {"f:spec": {}}  # the event untouched


def test_only_the_kinds_the_operator_watches_are_tracked() -> None:
    assert WatchedObjects.tracks("workerfleet.dev/v1alpha1", "WorkerPool")
    assert WatchedObjects.tracks("apps/v1", "Deployment")
    assert not WatchedObjects.tracks("v1", "ServiceAccount")


def test_an_applied_child_is_trusted_until_its_recheck_time() -> None:
    now = [0.0]
    applied = AppliedChildren(300, clock=lambda: now[0], jitter=lambda: 0.5)
    key = ("v1", "ServiceAccount", "media", "thumbs-worker")
    applied.remember(key, "abc")
    assert applied.holds(key, "abc")
    assert not applied.holds(key, "def"), "another hash must be applied"
    now[0] = 329.0
    assert applied.holds(key, "abc")
    now[0] = 331.0  # 300 s, plus a tenth of jitter
    assert not applied.holds(key, "abc"), "past its recheck time a child is read again"


def test_an_absent_child_is_remembered_as_absent_and_forgotten_on_demand() -> None:
    applied = AppliedChildren(300, clock=lambda: 0.0, jitter=lambda: 0.0)
    key = ("autoscaling/v2", "HorizontalPodAutoscaler", "media", "thumbs")
    applied.remember(key, ABSENT)
    assert applied.holds(key, ABSENT)
    applied.forget(key)
    assert not applied.holds(key, ABSENT)


def test_a_deleted_pools_objects_are_forgotten_and_no_others() -> None:
    watched = WatchedObjects()
    watched.remember(_deployment("12", 3))
    other = {**_deployment("14", 1), "metadata": {**_deployment("14", 1)["metadata"], "name": "videos"}}
    watched.remember(other)
    watched.forget_named("media", {"thumbs", "thumbs-canary"})
    assert watched.lookup(KEY) == (False, None)
    assert watched.lookup(("apps/v1", "Deployment", "media", "videos"))[0]

    applied = AppliedChildren(300, clock=lambda: 0.0, jitter=lambda: 0.0)
    mine, theirs = (
        ("v1", "ServiceAccount", "media", "thumbs-worker"),
        ("v1", "ServiceAccount", "other", "thumbs-worker"),
    )
    applied.remember(mine, "abc")
    applied.remember(theirs, "abc")
    applied.forget_named("media", {"thumbs-worker"})
    assert not applied.holds(mine, "abc")
    assert applied.holds(theirs, "abc")
