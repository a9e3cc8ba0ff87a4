"""A JobType whose input schema is not a JSON Schema is refused with a condition, not rolled out."""

from __future__ import annotations

from typing import Any

from devenv.cluster import Cluster
from devenv.waiting import eventually


def _condition(body: dict[str, Any] | None, condition_type: str) -> dict[str, Any] | None:
    for condition in ((body or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == condition_type:
            return dict(condition)
    return None


def _state(body: dict[str, Any] | None, condition_type: str) -> tuple[str, str] | None:
    condition = _condition(body, condition_type)
    return None if condition is None else (condition["status"], condition["reason"])


def _job_type(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "resize"},
        "spec": {"lane": "fast", "timeoutSeconds": 30, "input": {"schema": schema}},
    }


POOL = {
    "apiVersion": "workerfleet.dev/v1alpha1",
    "kind": "WorkerPool",
    "metadata": {"name": "images"},
    "spec": {
        "jobTypes": ["resize"],
        "replicas": 1,
        "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
        "queue": {"redis": {"address": "127.0.0.1:6379", "list": "jobs:images"}},
    },
}


def _ready(cluster: Cluster, namespace: str) -> bool:
    body = cluster.get("workerpool/images", namespace=namespace)
    return _state(body, "Ready") == ("True", "WorkersReady") and body["status"].get("readyReplicas") == 1


def _warnings(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = cluster.get("events", namespace=namespace)["items"]
    return [
        event["message"]
        for event in events
        if event["involvedObject"]["name"] == name and event["type"] == "Warning"
    ]


def test_an_invalid_input_schema_is_refused_and_running_workers_are_untouched(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a JobType with a valid input schema, accepted, and a pool serving it with its worker ready
    operator.apply(_job_type({"type": "object"}), POOL, namespace=ns)
    eventually(lambda: _ready(operator, ns), what="the pool Ready with its worker", timeout=90)
    eventually(
        lambda: _state(operator.get("jobtype/resize", namespace=ns), "Accepted") == ("True", "Valid"),
        what="JobType Accepted=True",
    )
    template_before = operator.get("deployment/images", namespace=ns)["spec"]["template"]

    # When the JobType's input schema is changed to something that is not a JSON Schema
    operator.apply(_job_type({"type": "nope"}), namespace=ns)

    # Then the JobType says why it is not accepted, with a Warning Event
    refused = eventually(
        lambda: (
            _condition(operator.get("jobtype/resize", namespace=ns), "Accepted")
            if _state(operator.get("jobtype/resize", namespace=ns), "Accepted")
            == ("False", "InvalidInputSchema")
            else None
        ),
        what="JobType Accepted=False InvalidInputSchema",
    )
    assert "input.schema.type" in refused["message"], refused
    assert "nope" in refused["message"], refused
    eventually(lambda: _warnings(operator, ns, "resize"), what="a Warning Event on the JobType")
    # And the pool is not Ready, naming the JobType
    eventually(
        lambda: (
            _state(operator.get("workerpool/images", namespace=ns), "Ready") == ("False", "JobTypeInvalid")
        ),
        what="pool Ready=False JobTypeInvalid",
    )
    assert "resize" in (_condition(operator.get("workerpool/images", namespace=ns), "Ready") or {})["message"]
    # And the running workers are not rolled to the broken policy
    assert operator.get("deployment/images", namespace=ns)["spec"]["template"] == template_before

    # When the schema is fixed
    operator.apply(_job_type({"type": "object", "required": ["url"]}), namespace=ns)

    # Then the JobType is accepted again and the pool recovers by itself
    eventually(
        lambda: _state(operator.get("jobtype/resize", namespace=ns), "Accepted") == ("True", "Valid"),
        what="JobType Accepted=True after the fix",
    )
    eventually(lambda: _ready(operator, ns), what="the pool Ready again", timeout=90)
