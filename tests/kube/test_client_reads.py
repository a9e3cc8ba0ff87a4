"""How many requests `Kube.check` sends for a child: the read budget of a reconcile."""

from __future__ import annotations

from typing import Any, cast

from workerfleet.kube.client import Kube
from workerfleet.kube.rest import ApiError, Rest

POOL_UID = "pool-uid"


class RecordingRest:
    """A Rest that records what it is asked and finds nothing (every object is absent)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def path(self, api_version: str, kind: str, namespace: str, name: str) -> str:
        return f"/{api_version}/{kind}/{namespace}/{name}"

    def request(self, method: str, path: str, **_: Any) -> Any:
        self.requests.append((method, path))
        raise ApiError(404, "NotFound", f"{path} not found", None)


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "media"},
        "spec": {"replicas": 1},
    }


def test_a_watched_child_never_seen_is_read_once() -> None:
    rest = RecordingRest()
    api = Kube(cast(Rest, rest))
    pending = api.check(deployment("thumbs"), POOL_UID)
    assert pending is not None
    assert pending.uid is None
    assert rest.requests == [("GET", "/apps/v1/Deployment/media/thumbs")]


def test_a_watched_child_the_watches_saw_deleted_is_read_once_more() -> None:
    # The watches see only a pool's labelled objects: someone else's object of the name is only found
    # by asking the server.
    rest = RecordingRest()
    api = Kube(cast(Rest, rest))
    api.watched.remember_deleted(deployment("thumbs"))
    api.check(deployment("thumbs"), POOL_UID)
    assert rest.requests == [("GET", "/apps/v1/Deployment/media/thumbs")]
