"""The models parse exactly what the API server accepts, and each rule's CEL and Python halves agree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from tests.api.crd_checks import apply_defaults, rule_failures, schema_errors
from workerfleet.api.base import API_VERSION, GROUP, VERSION
from workerfleet.api.jobtype import LANE_TIMEOUT_CEILING_SECONDS, JobType, JobTypeSpec, Permission, Retry
from workerfleet.api.schema import SchemaError, structural_schema
from workerfleet.api.workerpool import (
    Analysis,
    Autoscaling,
    Canary,
    Queue,
    RolloutPhase,
    WorkerPool,
    WorkerPoolConditionType,
    WorkerPoolSpec,
)

PROMETHEUS = {"address": "http://prometheus:9090"}
REDIS = {"address": "redis:6379", "list": "jobs"}
TEMPLATE = {"spec": {"containers": [{"name": "worker", "image": "thumbs:1"}]}}


@dataclass(frozen=True)
class RuleCase:
    name: str
    model: type[BaseModel]
    data: dict[str, Any]
    broken: str | None  # the rule message expected, or None when the data must pass


RULE_CASES = [
    RuleCase(
        "min equal to max",
        Autoscaling,
        {"minReplicas": 3, "maxReplicas": 3, "targetDepthPerReplica": 1},
        None,
    ),
    RuleCase(
        "min above max",
        Autoscaling,
        {"minReplicas": 4, "maxReplicas": 3, "targetDepthPerReplica": 1},
        "minReplicas must not exceed maxReplicas",
    ),
    RuleCase(
        "default min above max",
        Autoscaling,
        {"maxReplicas": 1, "minReplicas": 2, "targetDepthPerReplica": 1},
        "minReplicas must not exceed maxReplicas",
    ),
    RuleCase(
        "fallback at the bounds",
        Autoscaling,
        {"minReplicas": 2, "maxReplicas": 5, "targetDepthPerReplica": 1, "fallback": {"replicas": 5}},
        None,
    ),
    RuleCase(
        "fallback below min",
        Autoscaling,
        {"minReplicas": 2, "maxReplicas": 5, "targetDepthPerReplica": 1, "fallback": {"replicas": 1}},
        "fallback.replicas must lie between minReplicas and maxReplicas",
    ),
    RuleCase(
        "fallback above max",
        Autoscaling,
        {"minReplicas": 2, "maxReplicas": 5, "targetDepthPerReplica": 1, "fallback": {"replicas": 6}},
        "fallback.replicas must lie between minReplicas and maxReplicas",
    ),
    RuleCase("one backend", Queue, {"redis": REDIS}, None),
    RuleCase(
        "no backend", Queue, {}, "set exactly one queue backend: redis, redisStream, rabbitmq or prometheus"
    ),
    RuleCase(
        "two backends",
        Queue,
        {"redis": REDIS, "prometheus": {**PROMETHEUS, "query": "sum(depth)"}},
        "set exactly one queue backend: redis, redisStream, rabbitmq or prometheus",
    ),
    RuleCase("increasing weights", Canary, {"steps": [{"weight": 1}, {"weight": 2}, {"weight": 100}]}, None),
    RuleCase("a single step", Canary, {"steps": [{"weight": 100}]}, None),
    RuleCase(
        "decreasing weights",
        Canary,
        {"steps": [{"weight": 50}, {"weight": 10}]},
        "step weights must increase strictly from each step to the next",
    ),
    RuleCase(
        "repeated weights",
        Canary,
        {"steps": [{"weight": 10}, {"weight": 50}, {"weight": 50}]},
        "step weights must increase strictly from each step to the next",
    ),
    RuleCase(
        "equal weights apart",
        Canary,
        {"steps": [{"weight": 10}, {"weight": 20}, {"weight": 10}]},
        "step weights must increase strictly from each step to the next",
    ),
    RuleCase(
        "analysis with a threshold", Analysis, {"maxIncreaseOverStable": 0, "prometheus": PROMETHEUS}, None
    ),
    RuleCase(
        "analysis without a threshold",
        Analysis,
        {"prometheus": PROMETHEUS},
        "set maxErrorRate, maxIncreaseOverStable or both: an analysis needs a threshold",
    ),
    RuleCase(
        "backoff initial equal to max", Retry, {"backoff": {"initialSeconds": 5, "maxSeconds": 5}}, None
    ),
    RuleCase(
        "backoff initial above max",
        Retry,
        {"backoff": {"initialSeconds": 5, "maxSeconds": 4.5}},
        "initialSeconds must not exceed maxSeconds",
    ),
    RuleCase(
        "backoff initial above the default max",
        Retry,
        {"backoff": {"initialSeconds": 301}},
        "initialSeconds must not exceed maxSeconds",
    ),
    RuleCase(
        "a class in both lists",
        Retry,
        {"retryOn": ["transient", "policy"]},
        "a failure class cannot be in both retryOn and failFastOn",
    ),
    RuleCase("disjoint classes", Retry, {"retryOn": ["policy"], "failFastOn": ["validation"]}, None),
    RuleCase("fast lane at its ceiling", JobTypeSpec, {"lane": "fast", "timeoutSeconds": 300}, None),
    RuleCase(
        "fast lane past its ceiling",
        JobTypeSpec,
        {"lane": "fast", "timeoutSeconds": 301},
        "timeoutSeconds is too long for the lane: at most 300 for fast, 3600 for normal, 86400 for heavy",
    ),
    RuleCase(
        "normal lane past its ceiling",
        JobTypeSpec,
        {"lane": "normal", "timeoutSeconds": 3601},
        "timeoutSeconds is too long for the lane: at most 300 for fast, 3600 for normal, 86400 for heavy",
    ),
    RuleCase("heavy lane at its ceiling", JobTypeSpec, {"lane": "heavy", "timeoutSeconds": 86400}, None),
    RuleCase(
        "deadline equal to timeout",
        JobTypeSpec,
        {"lane": "fast", "timeoutSeconds": 60, "deadlineSeconds": 60},
        None,
    ),
    RuleCase(
        "deadline before timeout",
        JobTypeSpec,
        {"lane": "fast", "timeoutSeconds": 60, "deadlineSeconds": 59},
        "deadlineSeconds must be at least timeoutSeconds, or no attempt could ever finish",
    ),
    RuleCase(
        "names restrict get",
        Permission,
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a"]},
        None,
    ),
    RuleCase(
        "names cannot restrict create",
        Permission,
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"], "resourceNames": ["a"]},
        "resourceNames cannot restrict create or deletecollection: Kubernetes authorizes those before the"
        " object's name is known",
    ),
    RuleCase(
        "create without names",
        Permission,
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"], "resourceNames": []},
        None,
    ),
    RuleCase(
        "wildcard resource",
        Permission,
        {"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]},
        "wildcards are not allowed: name each resource the workers need",
    ),
    RuleCase(
        "wildcard group",
        Permission,
        {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]},
        "wildcards are not allowed: name each API group the workers need",
    ),
]


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda case: case.name)
def test_python_and_cel_halves_of_each_rule_agree(case: RuleCase) -> None:
    schema = structural_schema(case.model)
    defaulted = apply_defaults(schema, case.data)
    assert schema_errors(schema, defaulted) == []
    cel_messages = [failure.split(": ", 1)[1] for failure in rule_failures(schema, defaulted)]
    if case.broken is None:
        case.model.model_validate(case.data)
        assert cel_messages == []
    else:
        with pytest.raises(ValidationError, match=case.broken):
            case.model.model_validate(case.data)
        assert cel_messages == [case.broken]


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (Autoscaling, {"maxReplicas": "5", "targetDepthPerReplica": 1}),
        (Autoscaling, {"maxReplicas": 5.0, "targetDepthPerReplica": 1}),
        (Autoscaling, {"maxReplicas": True, "targetDepthPerReplica": 1}),
        (
            WorkerPoolSpec,
            {"jobTypes": "resize", "template": TEMPLATE, "queue": {"redis": REDIS}},
        ),
        (Queue, {"redis": {**REDIS, "database": "0"}}),
        (Analysis, {"maxErrorRate": "0.1", "prometheus": PROMETHEUS}),
    ],
)
def test_no_silent_type_coercion(model: type[BaseModel], data: dict[str, Any]) -> None:
    # The API server refuses "5" for an integer, so the models do too.
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_numbers_accept_integers_as_the_api_server_does() -> None:
    analysis = Analysis.model_validate({"maxErrorRate": 0, "prometheus": PROMETHEUS})
    assert analysis.max_error_rate == 0.0


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Queue.model_validate({"redis": {**REDIS, "password": "hunter2"}})


def test_pod_template_passes_unknown_fields_through() -> None:
    template = {
        "metadata": {"labels": {"team": "media"}},
        "spec": {"containers": [{"name": "worker", "image": "thumbs:1"}], "priorityClassName": "batch"},
    }
    spec = WorkerPoolSpec.model_validate(
        {"jobTypes": ["resize"], "template": template, "queue": {"redis": REDIS}}
    )
    assert spec.to_dict()["template"] == template


def test_pod_template_needs_a_container() -> None:
    with pytest.raises(ValidationError, match="at least 1 item"):
        WorkerPoolSpec.model_validate(
            {"jobTypes": ["resize"], "template": {"spec": {"containers": []}}, "queue": {"redis": REDIS}}
        )


def test_wire_names_are_camel_case_with_kubernetes_spellings() -> None:
    spec = WorkerPoolSpec.model_validate(
        {"jobTypes": ["resize"], "template": TEMPLATE, "queue": {"redis": REDIS}}
    )
    assert spec.queue.redis is not None
    assert spec.queue.redis.list_key == "jobs"
    wire = spec.to_dict()
    assert wire["jobTypes"] == ["resize"]
    assert wire["queue"] == {"redis": {"address": "redis:6379", "database": 0, "list": "jobs"}}
    assert "autoscaling" not in wire


def test_input_schema_is_spelled_schema_on_the_wire() -> None:
    spec = JobTypeSpec.model_validate(
        {"lane": "fast", "timeoutSeconds": 10, "input": {"schema": {"type": "object", "required": ["id"]}}}
    )
    assert spec.input is not None
    assert spec.input.payload_schema == {"type": "object", "required": ["id"]}
    assert spec.to_dict()["input"] == {"schema": {"type": "object", "required": ["id"]}}


def test_resources_carry_group_version_and_kind() -> None:
    assert API_VERSION == f"{GROUP}/{VERSION}" == "workerfleet.dev/v1alpha1"
    job_type = JobType.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "JobType",
            "metadata": {"name": "resize", "uid": "ignored", "resourceVersion": "7"},
            "spec": {"lane": "fast", "timeoutSeconds": 10},
        }
    )
    assert job_type.metadata.name == "resize"
    with pytest.raises(ValidationError):
        JobType.model_validate(
            {"apiVersion": "v1", "kind": "JobType", "metadata": {}, "spec": job_type.spec.to_dict()}
        )


def test_pool_names_must_fit_label_values_with_a_suffix() -> None:
    spec = {"jobTypes": ["resize"], "template": TEMPLATE, "queue": {"redis": REDIS}}
    WorkerPool.model_validate({"metadata": {"name": "p" * 56}, "spec": spec})
    with pytest.raises(ValidationError, match="at most 56 characters"):
        WorkerPool.model_validate({"metadata": {"name": "p" * 57}, "spec": spec})


def test_condition_types_are_documented_on_the_status_field() -> None:
    conditions = structural_schema(WorkerPool)["properties"]["status"]["properties"]["conditions"]
    assert all(
        condition_type.value in conditions["description"] for condition_type in WorkerPoolConditionType
    )


def test_rollout_phases_are_documented() -> None:
    phase = structural_schema(WorkerPool)["properties"]["status"]["properties"]["rollout"]["properties"][
        "phase"
    ]
    assert phase["enum"] == [member.value for member in RolloutPhase]
    assert all(member.value in phase["description"] for member in RolloutPhase)


def test_a_union_of_types_has_no_structural_form() -> None:
    class Ambiguous(BaseModel):
        value: int | str

    with pytest.raises(SchemaError, match="union of 2 types"):
        structural_schema(Ambiguous)


def test_lane_ceilings_are_documented_on_the_lane_field() -> None:
    lane = structural_schema(JobTypeSpec)["properties"]["lane"]
    for ceiling_lane, seconds in LANE_TIMEOUT_CEILING_SECONDS.items():
        assert f"{ceiling_lane.value} (" in lane["description"]
        assert f"at most {seconds})" in lane["description"]
