"""A JobType whose input schema is not a JSON Schema is refused with a condition, not rolled out."""

from __future__ import annotations

import json
from typing import Any

import yaml

from e2e.cluster import Cluster
from e2e.waiting import eventually


def _get(cluster: Cluster, namespace: str, what: str) -> Any:
    result = cluster.kubectl("get", what, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _condition(body: dict[str, Any] | None, condition_type: str) -> dict[str, Any] | None:
    for condition in ((body or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == condition_type:
            return dict(condition)
    return None


def _state(body: dict[str, Any] | None, condition_type: str) -> tuple[str, str] | None:
    condition = _condition(body, condition_type)
    return None if condition is None else (condition["status"], condition["reason"])


def _apply(cluster: Cluster, namespace: str, *documents: dict[str, Any]) -> None:
    text = "\n---\n".join(yaml.safe_dump(document) for document in documents)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=text)


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
    body = _get(cluster, namespace, "workerpool/images")
    return _state(body, "Ready") == ("True", "WorkersReady") and body["status"].get("readyReplicas") == 1


def _warnings(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = _get(cluster, namespace, "events")["items"]
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
    _apply(operator, ns, _job_type({"type": "object"}), POOL)
    eventually(lambda: _ready(operator, ns), what="the pool Ready with its worker", timeout=90)
    eventually(
        lambda: _state(_get(operator, ns, "jobtype/resize"), "Accepted") == ("True", "Valid"),
        what="JobType Accepted=True",
    )
    template_before = _get(operator, ns, "deployment/images")["spec"]["template"]

    # When the JobType's input schema is changed to something that is not a JSON Schema
    _apply(operator, ns, _job_type({"type": "nope"}))

    # Then the JobType says why it is not accepted, with a Warning Event
    refused = eventually(
        lambda: (
            _condition(_get(operator, ns, "jobtype/resize"), "Accepted")
            if _state(_get(operator, ns, "jobtype/resize"), "Accepted") == ("False", "InvalidInputSchema")
            else None
        ),
        what="JobType Accepted=False InvalidInputSchema",
    )
    assert "input.schema.type" in refused["message"], refused
    assert "nope" in refused["message"], refused
    eventually(lambda: _warnings(operator, ns, "resize"), what="a Warning Event on the JobType")
    # And the pool is not Ready, naming the JobType
    eventually(
        lambda: _state(_get(operator, ns, "workerpool/images"), "Ready") == ("False", "JobTypeInvalid"),
        what="pool Ready=False JobTypeInvalid",
    )
    assert "resize" in (_condition(_get(operator, ns, "workerpool/images"), "Ready") or {})["message"]
    # And the running workers are not rolled to the broken policy
    assert _get(operator, ns, "deployment/images")["spec"]["template"] == template_before

    # When the schema is fixed
    _apply(operator, ns, _job_type({"type": "object", "required": ["url"]}))

    # Then the JobType is accepted again and the pool recovers by itself
    eventually(
        lambda: _state(_get(operator, ns, "jobtype/resize"), "Accepted") == ("True", "Valid"),
        what="JobType Accepted=True after the fix",
    )
    eventually(lambda: _ready(operator, ns), what="the pool Ready again", timeout=90)
