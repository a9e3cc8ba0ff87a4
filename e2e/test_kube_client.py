"""The operator's own REST client against the real API server: reads, applies, pages, refusals."""

from __future__ import annotations

import json

import pytest

from e2e.cluster import Cluster
from workerfleet.kube import client
from workerfleet.kube.client import Kube
from workerfleet.kube.rest import ApiError, KindNotServedError, Rest, kubeconfig_credentials
from workerfleet.planners.children import ChildKey


@pytest.fixture
def admin(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Kube:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    return Kube(Rest(kubeconfig_credentials()))


def _config_map(namespace: str, name: str, value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"value": value},
    }


def test_apply_writes_once_and_reads_back_what_the_server_holds(admin: Kube, namespace: str) -> None:
    # Given no ConfigMap "settings"
    assert admin.read("v1", "ConfigMap", namespace, "settings") is None

    # When it is applied twice with the same content
    first = admin.apply(_config_map(namespace, "settings", "1"))
    second = admin.apply(_config_map(namespace, "settings", "1"))

    # Then one write was sent and the server holds the content
    assert (first, second) == (True, False)
    live = admin.read("v1", "ConfigMap", namespace, "settings")
    assert live is not None
    assert live["data"] == {"value": "1"}

    # And a delete removes it, a second delete finds nothing to do
    assert admin.delete(namespace, ChildKey("v1", "ConfigMap", "settings")) is True
    assert admin.delete(namespace, ChildKey("v1", "ConfigMap", "settings")) is False


def test_a_kind_the_server_does_not_serve_is_named(admin: Kube, namespace: str) -> None:
    widget = {
        "apiVersion": "example.test/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": namespace},
    }

    assert admin.read("example.test/v1", "Widget", namespace, "w") is None
    with pytest.raises(KindNotServedError, match="serves no Widget"):
        admin.apply(widget)


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
