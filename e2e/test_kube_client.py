"""The operator's own REST client against the real API server: reads, applies, pages, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devenv.cluster import Cluster
from workerfleet.kube import client
from workerfleet.kube.client import Kube, Pending
from workerfleet.kube.options import ClusterOptions
from workerfleet.kube.rest import ApiError, KindNotServedError, Rest
from workerfleet.planners.children import ChildKey


@pytest.fixture
def admin(cluster: Cluster) -> Kube:
    return Kube(Rest(ClusterOptions(kubeconfig=str(cluster.kubeconfig))))


def _config_map(namespace: str, name: str, value: str, owner: dict[str, Any]) -> dict[str, Any]:
    """A ConfigMap controlled by `owner` (as a pool controls its children)."""
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": [reference]},
        "data": {"value": value},
    }


def test_a_child_is_written_once_and_read_back_as_the_server_holds_it(
    admin: Kube, cluster: Cluster, namespace: str
) -> None:
    # Given an owner, and no ConfigMap "settings"
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = admin.read("v1", "ConfigMap", namespace, "owner")
    assert owner is not None
    assert admin.read("v1", "ConfigMap", namespace, "settings") is None
    uid = owner["metadata"]["uid"]

    # When the child is checked and written, then checked again with the same content
    pending = admin.check(_config_map(namespace, "settings", "1", owner), uid)
    assert pending is not None
    admin.write(pending)
    again = admin.check(_config_map(namespace, "settings", "1", owner), uid, verify=True)

    # Then one write was needed and the server holds the content
    assert again is None
    live = admin.read("v1", "ConfigMap", namespace, "settings")
    assert live is not None
    assert live["data"] == {"value": "1"}

    # And a delete removes it, a second delete finds nothing to do
    assert admin.delete(namespace, ChildKey("v1", "ConfigMap", "settings"), uid) is True
    assert admin.delete(namespace, ChildKey("v1", "ConfigMap", "settings"), uid) is False


def test_a_kind_the_server_does_not_serve_is_named(admin: Kube, namespace: str) -> None:
    widget = {
        "apiVersion": "example.test/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": namespace},
    }

    assert admin.read("example.test/v1", "Widget", namespace, "w") is None
    with pytest.raises(KindNotServedError, match="serves no Widget"):
        admin.write(Pending(widget, ("example.test/v1", "Widget", namespace, "w"), "hash", None, "owner"))


def test_lists_are_read_a_page_at_a_time(
    admin: Kube, crds: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five pools and pages of two
    for index in range(5):
        pool = {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": f"pool-{index}", "namespace": namespace},
            "spec": {
                "jobTypes": ["work"],
                "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
                "queue": {"redis": {"address": "127.0.0.1:6379", "list": "jobs"}},
            },
        }
        crds.kubectl("apply", "-f", "-", input_text=json.dumps(pool))
    monkeypatch.setattr(client, "LIST_PAGE_SIZE", 2)

    # When they are listed, Then all five arrive, each once
    names = sorted(pool["metadata"]["name"] for pool in admin.list_pools((namespace,)))
    assert names == [f"pool-{index}" for index in range(5)]


def test_a_refusal_carries_the_servers_status_and_message(admin: Kube, namespace: str) -> None:
    # When pods are listed with a selector that does not parse
    with pytest.raises(ApiError) as refused:
        admin.pod_labels(namespace, "not a selector!")

    # Then the server's status and words come back
    assert refused.value.status == 400
    assert "unable to parse requirement" in refused.value.message


def test_a_child_made_by_someone_else_after_the_check_is_not_merged_into(
    admin: Kube, cluster: Cluster, namespace: str
) -> None:
    # Given an owner, and a child "settings" found absent
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = admin.read("v1", "ConfigMap", namespace, "owner")
    assert owner is not None
    pending = admin.check(_config_map(namespace, "settings", "1", owner), owner["metadata"]["uid"])
    assert pending is not None

    # When someone else creates an object of that name before the child is written
    cluster.kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=theirs=yes")
    theirs = admin.read("v1", "ConfigMap", namespace, "settings")
    assert theirs is not None

    # Then the write is refused as a name conflict naming who made it, and their object is untouched
    with pytest.raises(client.NameConflictError) as conflict:
        admin.write(pending)
    assert "managed by kubectl-create" in str(conflict.value)
    after = admin.read("v1", "ConfigMap", namespace, "settings")
    assert after == theirs


def test_a_created_child_loses_what_a_later_apply_leaves_out(
    admin: Kube, cluster: Cluster, namespace: str
) -> None:
    # Given a child created with a label
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = admin.read("v1", "ConfigMap", namespace, "owner")
    assert owner is not None
    uid = owner["metadata"]["uid"]
    labelled = _config_map(namespace, "settings", "1", owner)
    labelled["metadata"]["labels"] = {"old": "yes"}
    created = admin.check(labelled, uid)
    assert created is not None
    admin.write(created)

    # When it is applied again without the label
    updated = admin.check(_config_map(namespace, "settings", "2", owner), uid, verify=True)
    assert updated is not None
    admin.write(updated)

    # Then the label is gone (the create's fields were the operator's applied ones, not an update's)
    live = admin.read("v1", "ConfigMap", namespace, "settings")
    assert live is not None
    assert (live["data"], live["metadata"].get("labels")) == ({"value": "2"}, None)
