"""The objects a WorkerPool owns: table tests over the pure planner."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import WorkerPoolSpec
from workerfleet.planners.children import (
    DRAIN_MARGIN_SECONDS,
    POD_TEMPLATE_ANNOTATION,
    POLICIES_CHECKSUM_ANNOTATION,
    ChildKey,
    Manifest,
    PoolRef,
    Workers,
    grace_period_seconds,
    plan_children,
    revision_of,
    role_rules,
)

POOL = PoolRef(name="thumbs", namespace="media", uid="1234")


def job_type(timeout: int = 60, permissions: list[dict[str, Any]] | None = None) -> JobTypeSpec:
    return JobTypeSpec.model_validate(
        {"lane": "normal", "timeoutSeconds": timeout, "permissions": permissions or []}
    )


def pool_spec(**overrides: Any) -> WorkerPoolSpec:
    spec: dict[str, Any] = {
        "jobTypes": ["resize-image"],
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "worker", "image": "thumbs:1"}]}},
        "queue": {"redis": {"address": "redis:6379", "list": "jobs:resize"}},
    }
    spec.update(overrides)
    return WorkerPoolSpec.model_validate(spec)


def by_kind(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {manifest["kind"]: manifest for manifest in manifests}


READ_THUMBS = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["thumbs"]}
LIST_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "get"]}


@pytest.mark.parametrize(
    ("permissions", "expected"),
    [
        ([], []),
        ([[READ_THUMBS]], [READ_THUMBS]),
        # the same grant from two job types is one rule
        ([[READ_THUMBS], [READ_THUMBS]], [READ_THUMBS]),
        # verbs are sorted, so equal grants written differently are equal
        ([[LIST_PODS], [{**LIST_PODS, "verbs": ["get", "list"]}]], [{**LIST_PODS, "verbs": ["get", "list"]}]),
        (
            [[READ_THUMBS], [LIST_PODS]],
            sorted([READ_THUMBS, {**LIST_PODS, "verbs": ["get", "list"]}], key=json.dumps),
        ),
    ],
)
def test_role_rules_are_the_union_of_job_type_permissions(
    permissions: list[list[dict[str, Any]]], expected: list[dict[str, Any]]
) -> None:
    rules = role_rules(job_type(permissions=p) for p in permissions)
    assert sorted(rules, key=lambda r: json.dumps(r, sort_keys=True)) == sorted(
        expected, key=lambda r: json.dumps(r, sort_keys=True)
    )


@pytest.mark.parametrize(
    ("timeouts", "grace"),
    [
        ([], DRAIN_MARGIN_SECONDS),
        ([60], 60 + DRAIN_MARGIN_SECONDS),
        ([30, 600, 5], 600 + DRAIN_MARGIN_SECONDS),
    ],
)
def test_grace_period_follows_the_longest_attempt(timeouts: list[int], grace: int) -> None:
    assert grace_period_seconds(job_type(timeout=t) for t in timeouts) == grace


def test_revision_is_stable_across_key_order_and_changes_with_content() -> None:
    a = {"spec": {"containers": [{"name": "w", "image": "x:1"}]}, "metadata": {"labels": {"a": "b"}}}
    b = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"image": "x:1", "name": "w"}]}}
    assert revision_of(a) == revision_of(b)
    assert revision_of(a) != revision_of({"spec": {"containers": [{"name": "w", "image": "x:2"}]}})


def test_every_child_is_owned_by_the_pool_and_labelled() -> None:
    plan = plan_children(POOL, pool_spec(), {"resize-image": job_type(permissions=[READ_THUMBS])})
    for manifest in plan.apply:
        metadata = manifest["metadata"]
        assert metadata["namespace"] == "media"
        [owner] = metadata["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "WorkerPool",
            "thumbs",
            "1234",
            True,
        )
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "workerfleet"
        assert metadata["labels"]["workerfleet.dev/pool"] == "thumbs"


def test_deployment_passes_the_restricted_profile_by_default() -> None:
    deployment = by_kind(plan_children(POOL, pool_spec(), {"resize-image": job_type()}).apply)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert pod["terminationGracePeriodSeconds"] == 60 + DRAIN_MARGIN_SECONDS
    assert deployment["spec"]["replicas"] == 2


def test_user_security_settings_are_kept_not_silently_weakened_or_overwritten() -> None:
    template = {
        "spec": {
            "securityContext": {"runAsUser": 1000},
            "containers": [
                {"name": "w", "image": "x:1", "securityContext": {"readOnlyRootFilesystem": False}}
            ],
        }
    }
    deployment = by_kind(
        plan_children(POOL, pool_spec(template=template), {"resize-image": job_type()}).apply
    )["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


def test_workers_learn_pool_revision_queue_and_policies_from_the_environment() -> None:
    spec = pool_spec()
    deployment = by_kind(plan_children(POOL, spec, {"resize-image": job_type()}).apply)["Deployment"]
    env = {v["name"]: v["value"] for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WORKERFLEET_POOL"] == "thumbs"
    assert env["WORKERFLEET_REVISION"] == revision_of(spec.template.to_dict())
    assert json.loads(env["WORKERFLEET_QUEUE"]) == {
        "redis": {"address": "redis:6379", "database": 0, "list": "jobs:resize"}
    }
    assert env["WORKERFLEET_POLICIES"] == "/etc/workerfleet/policies.json"


@pytest.mark.parametrize(
    ("permissions", "token", "rbac_applied"),
    [([], False, False), ([READ_THUMBS], True, True)],
)
def test_api_access_only_for_job_types_that_declare_permissions(
    permissions: list[dict[str, Any]], token: bool, rbac_applied: bool
) -> None:
    plan = plan_children(POOL, pool_spec(), {"resize-image": job_type(permissions=permissions)})
    kinds = by_kind(plan.apply)
    assert kinds["ServiceAccount"]["automountServiceAccountToken"] is token
    assert kinds["Deployment"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is token
    assert ("Role" in kinds) is rbac_applied
    assert ("RoleBinding" in kinds) is rbac_applied
    role_keys = {
        ChildKey("rbac.authorization.k8s.io/v1", k, "thumbs-worker") for k in ("Role", "RoleBinding")
    }
    assert role_keys.isdisjoint(plan.delete) is rbac_applied
    if rbac_applied:
        assert kinds["Role"]["rules"] == [READ_THUMBS]
        assert kinds["RoleBinding"]["subjects"] == [
            {"kind": "ServiceAccount", "name": "thumbs-worker", "namespace": "media"}
        ]


@pytest.mark.parametrize(("replicas", "budget"), [(0, False), (1, False), (2, True), (10, True)])
def test_disruption_budget_only_with_more_than_one_replica(replicas: int, budget: bool) -> None:
    plan = plan_children(POOL, pool_spec(replicas=replicas), {"resize-image": job_type()})
    assert ("PodDisruptionBudget" in by_kind(plan.apply)) is budget
    assert (ChildKey("policy/v1", "PodDisruptionBudget", "thumbs") in plan.delete) is not budget


@pytest.mark.parametrize(
    ("autoscaling", "hpa_min"),
    [
        (None, None),
        ({"minReplicas": 0, "maxReplicas": 10, "targetDepthPerReplica": 50}, 1),
        ({"minReplicas": 3, "maxReplicas": 10, "targetDepthPerReplica": 50}, 3),
        ({"engine": "keda", "minReplicas": 0, "maxReplicas": 10, "targetDepthPerReplica": 50}, None),
    ],
)
def test_autoscaler_targets_the_pool_scale_subresource(
    autoscaling: dict[str, Any] | None, hpa_min: int | None
) -> None:
    overrides = {"autoscaling": autoscaling} if autoscaling else {}
    plan = plan_children(POOL, pool_spec(**overrides), {"resize-image": job_type()})
    hpa = by_kind(plan.apply).get("HorizontalPodAutoscaler")
    if hpa_min is None:
        assert hpa is None
        assert ChildKey("autoscaling/v2", "HorizontalPodAutoscaler", "thumbs") in plan.delete
        return
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "name": "thumbs",
    }
    assert hpa["spec"]["minReplicas"] == hpa_min
    assert hpa["spec"]["maxReplicas"] == 10
    [metric] = hpa["spec"]["metrics"]
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "50"}


KEDA_QUEUE = {
    "redis": {
        "address": "redis:6379",
        "list": "jobs",
        "auth": {"passwordSecretRef": {"name": "s", "key": "p"}},
    }
}
KEDA_SCALING = {"engine": "keda", "minReplicas": 0, "maxReplicas": 10, "targetDepthPerReplica": 50}


@pytest.mark.parametrize(
    ("autoscaling", "refused", "written"),
    [
        (KEDA_SCALING, False, ["TriggerAuthentication", "ScaledObject"]),
        # KEDA may not be given the address or the Secret: neither object, and any left is deleted
        (KEDA_SCALING, True, []),
        ({**KEDA_SCALING, "engine": "builtin"}, False, []),
        (None, False, []),
    ],
)
def test_keda_objects_only_in_keda_mode_and_only_when_not_refused(
    autoscaling: dict[str, Any] | None, refused: bool, written: list[str]
) -> None:
    overrides = {"autoscaling": autoscaling} if autoscaling else {}
    spec = pool_spec(queue=KEDA_QUEUE, **overrides)
    plan = plan_children(POOL, spec, {"resize-image": job_type()}, keda_refused=refused)
    assert [m["kind"] for m in plan.apply if m["apiVersion"] == "keda.sh/v1alpha1"] == written
    deleted = [key.kind for key in plan.delete if key.api_version == "keda.sh/v1alpha1"]
    assert deleted == [kind for kind in ("ScaledObject", "TriggerAuthentication") if kind not in written]


def test_behavior_is_passed_to_the_hpa_as_written() -> None:
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": 60,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}],
        }
    }
    spec = pool_spec(autoscaling={"maxReplicas": 5, "targetDepthPerReplica": 10, "behavior": behavior})
    hpa = by_kind(plan_children(POOL, spec, {"resize-image": job_type()}).apply)["HorizontalPodAutoscaler"]
    assert hpa["spec"]["behavior"] == behavior


def test_policies_config_map_holds_every_job_type_spec() -> None:
    plan = plan_children(
        POOL, pool_spec(jobTypes=["a", "b"]), {"b": job_type(timeout=5), "a": job_type(timeout=7)}
    )
    config_map = by_kind(plan.apply)["ConfigMap"]
    document = json.loads(config_map["data"]["policies.json"])
    assert list(document["jobTypes"]) == ["a", "b"]
    assert document["jobTypes"]["a"]["timeoutSeconds"] == 7


def test_plan_is_deterministic() -> None:
    spec, job_types = pool_spec(), {"resize-image": job_type(permissions=[READ_THUMBS, LIST_PODS])}
    assert plan_children(POOL, spec, job_types) == plan_children(POOL, spec, job_types)


def test_queue_credentials_are_referenced_never_copied() -> None:
    queue = {
        "rabbitmq": {
            "address": "rabbitmq:5672",
            "queue": "jobs",
            "auth": {
                "usernameSecretRef": {"name": "rabbit", "key": "user"},
                "passwordSecretRef": {"name": "rabbit", "key": "password"},
            },
        }
    }
    plan = plan_children(POOL, pool_spec(queue=queue), {"resize-image": job_type()})
    deployment = by_kind(plan.apply)["Deployment"]
    env = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WORKERFLEET_QUEUE_USERNAME"]["valueFrom"] == {
        "secretKeyRef": {"name": "rabbit", "key": "user"}
    }
    assert env["WORKERFLEET_QUEUE_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "rabbit", "key": "password"}
    }
    assert "value" not in env["WORKERFLEET_QUEUE_PASSWORD"]


def test_the_idempotency_store_credentials_and_ca_are_referenced_never_copied() -> None:
    store = {
        "address": "keys.redis:6380",
        "auth": {
            "usernameSecretRef": {"name": "keys", "key": "user"},
            "passwordSecretRef": {"name": "keys", "key": "password"},
        },
        "tls": {"caSecretRef": {"name": "keys-ca", "key": "ca.crt"}, "serverName": "keys.internal"},
    }
    queue = {"rabbitmq": {"address": "rabbitmq:5672", "queue": "jobs", "idempotencyStore": store}}
    plan = plan_children(POOL, pool_spec(queue=queue), {"resize-image": job_type()})
    deployment = by_kind(plan.apply)["Deployment"]
    env = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {name: env[name]["valueFrom"]["secretKeyRef"] for name in env if "STORE" in name} == {
        "WORKERFLEET_STORE_USERNAME": {"name": "keys", "key": "user"},
        "WORKERFLEET_STORE_PASSWORD": {"name": "keys", "key": "password"},
        "WORKERFLEET_STORE_CA": {"name": "keys-ca", "key": "ca.crt"},
    }
    assert "WORKERFLEET_QUEUE_PASSWORD" not in env  # the broker's own auth is unset
    assert json.loads(env["WORKERFLEET_QUEUE"]["value"])["rabbitmq"]["idempotencyStore"] == {
        **store,
        "database": 0,
    }


@pytest.mark.parametrize(
    ("tls", "ca_variable"),
    [
        ({"caSecretRef": {"name": "queue-ca", "key": "ca.crt"}, "serverName": "redis.internal"}, True),
        ({"serverName": "redis.internal"}, False),  # the system's CAs: nothing to mount
        (None, False),
    ],
)
@pytest.mark.parametrize("backend", ["redis", "redisStream", "rabbitmq"])
def test_the_queue_ca_reaches_the_worker_by_reference_and_the_tls_settings_with_the_queue(
    backend: str, tls: dict[str, Any] | None, ca_variable: bool
) -> None:
    settings: dict[str, Any] = {
        "redis": {"address": "redis:6379", "list": "jobs"},
        "redisStream": {"address": "redis:6379", "stream": "jobs", "consumerGroup": "workers"},
        "rabbitmq": {"address": "rabbitmq:5671", "queue": "jobs"},
    }[backend]
    queue = {backend: {**settings, **({"tls": tls} if tls is not None else {})}}
    plan = plan_children(POOL, pool_spec(queue=queue), {"resize-image": job_type()})
    deployment = by_kind(plan.apply)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    env = {v["name"]: v for v in pod["containers"][0]["env"]}
    if ca_variable:
        assert env["WORKERFLEET_QUEUE_CA"] == {
            "name": "WORKERFLEET_QUEUE_CA",
            "valueFrom": {"secretKeyRef": {"name": "queue-ca", "key": "ca.crt"}},
        }
    else:
        assert "WORKERFLEET_QUEUE_CA" not in env
    assert json.loads(env["WORKERFLEET_QUEUE"]["value"])[backend].get("tls") == tls
    # No volume for it: the CA is read like the credentials, one key of one Secret, through the kubelet
    assert not [v for v in pod["volumes"] if "secret" in v]


def test_a_canary_runs_beside_the_stable_deployment_with_its_own_selector() -> None:
    old = {"spec": {"containers": [{"name": "worker", "image": "thumbs:1"}]}}
    new = {"spec": {"containers": [{"name": "worker", "image": "thumbs:2"}]}}
    workers = Workers(stable_template=old, stable_replicas=9, canary_template=new, canary_replicas=1)
    plan = plan_children(POOL, pool_spec(template=new, replicas=10), {"resize-image": job_type()}, workers)
    deployments = {m["metadata"]["name"]: m for m in plan.apply if m["kind"] == "Deployment"}
    stable, canary = deployments["thumbs"], deployments["thumbs-canary"]
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (9, 1)
    assert stable["spec"]["selector"]["matchLabels"]["workerfleet.dev/track"] == "stable"
    assert canary["spec"]["selector"]["matchLabels"]["workerfleet.dev/track"] == "canary"
    for deployment, template in ((stable, old), (canary, new)):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["workerfleet.dev/revision"] == revision_of(template)
        assert set(deployment["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
        env = {
            v["name"]: v.get("value") for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["WORKERFLEET_REVISION"] == revision_of(template)
        assert json.loads(deployment["metadata"]["annotations"][POD_TEMPLATE_ANNOTATION]) == template
    assert ChildKey("apps/v1", "Deployment", "thumbs-canary") not in plan.delete


def test_without_a_canary_its_deployment_is_deleted() -> None:
    plan = plan_children(POOL, pool_spec(), {"resize-image": job_type()})
    assert ChildKey("apps/v1", "Deployment", "thumbs-canary") in plan.delete
    assert [m["metadata"]["name"] for m in plan.apply if m["kind"] == "Deployment"] == ["thumbs"]


def environment_of(container: Manifest) -> dict[str, str]:
    return {variable["name"]: variable.get("value", "") for variable in container["env"]}


PROBES_ON_8000: dict[str, Any] = {
    "ports": [{"name": "metrics", "containerPort": 8000, "protocol": "TCP"}],
    "livenessProbe": {
        "httpGet": {"path": "/healthz", "port": "metrics"},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    },
    "readinessProbe": {
        "httpGet": {"path": "/readyz", "port": "metrics"},
        "periodSeconds": 5,
        "timeoutSeconds": 5,
        "failureThreshold": 2,
    },
}


@pytest.mark.parametrize(
    ("worker", "container", "expected"),
    [
        # the default: the workerfleet runtime on 8000
        (None, {}, {**PROBES_ON_8000, "port_env": "8000"}),
        (
            {"runtime": "workerfleet", "port": 9100},
            {},
            {
                "ports": [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}],
                "livenessProbe": {**PROBES_ON_8000["livenessProbe"]},
                "readinessProbe": {**PROBES_ON_8000["readinessProbe"]},
                "port_env": "9100",
            },
        ),
        # other ports stay; one clashing by name or number gives way
        (
            None,
            {
                "ports": [
                    {"containerPort": 8080},
                    {"name": "metrics", "containerPort": 9},
                    {"containerPort": 8000},
                ]
            },
            {
                **PROBES_ON_8000,
                "ports": [{"containerPort": 8080}, *PROBES_ON_8000["ports"]],
                "port_env": "8000",
            },
        ),
        # probes the template sets are the image author's: kept
        (
            None,
            {"livenessProbe": {"exec": {"command": ["true"]}}},
            {**PROBES_ON_8000, "livenessProbe": {"exec": {"command": ["true"]}}, "port_env": "8000"},
        ),
        # an image without the runtime: nothing added
        (
            {"runtime": "none"},
            {},
            {"ports": None, "livenessProbe": None, "readinessProbe": None, "port_env": None},
        ),
        (
            {"runtime": "none"},
            {"ports": [{"containerPort": 8080}]},
            {
                "ports": [{"containerPort": 8080}],
                "livenessProbe": None,
                "readinessProbe": None,
                "port_env": None,
            },
        ),
    ],
)
def test_the_runtime_port_and_probes_go_to_the_first_container(
    worker: dict[str, Any] | None, container: dict[str, Any], expected: dict[str, Any]
) -> None:
    template = {
        "spec": {
            "containers": [
                {"name": "worker", "image": "thumbs:1", **container},
                {"name": "side", "image": "s:1"},
            ]
        }
    }
    overrides: dict[str, Any] = {"template": template}
    if worker is not None:
        overrides["worker"] = worker
    plan = plan_children(POOL, pool_spec(**overrides), {"resize-image": job_type()})
    first, second = by_kind(plan.apply)["Deployment"]["spec"]["template"]["spec"]["containers"]
    found = {key: first.get(key) for key in ("ports", "livenessProbe", "readinessProbe")}
    found["port_env"] = environment_of(first).get("WORKERFLEET_METRICS_PORT")
    assert found == expected
    assert "livenessProbe" not in second
    assert "ports" not in second


def test_the_drain_fits_in_the_grace_period_of_probed_pods() -> None:
    plan = plan_children(POOL, pool_spec(), {"resize-image": job_type(timeout=300)})
    pod = by_kind(plan.apply)["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 300 + DRAIN_MARGIN_SECONDS


def checksum_of(spec: WorkerPoolSpec, job_types: dict[str, JobTypeSpec]) -> str:
    deployment = by_kind(plan_children(POOL, spec, job_types).apply)["Deployment"]
    checksum: str = deployment["spec"]["template"]["metadata"]["annotations"][POLICIES_CHECKSUM_ANNOTATION]
    return checksum


BASE_JOB_TYPE: dict[str, Any] = {"lane": "normal", "timeoutSeconds": 60}


@pytest.mark.parametrize(
    ("before", "after", "rolls"),
    [
        ({"a": BASE_JOB_TYPE}, {"a": BASE_JOB_TYPE}, False),
        # a field order does not matter
        ({"a": {"timeoutSeconds": 60, "lane": "normal"}}, {"a": BASE_JOB_TYPE}, False),
        ({"a": BASE_JOB_TYPE}, {"a": {**BASE_JOB_TYPE, "retry": {"maxAttempts": 9}}}, True),
        ({"a": BASE_JOB_TYPE}, {"a": {**BASE_JOB_TYPE, "deadLetter": {"queue": "a.dlq"}}}, True),
        ({"a": BASE_JOB_TYPE}, {"a": {**BASE_JOB_TYPE, "input": {"schema": {"type": "object"}}}}, True),
        ({"a": BASE_JOB_TYPE}, {"a": BASE_JOB_TYPE, "b": BASE_JOB_TYPE}, True),
        ({"a": BASE_JOB_TYPE, "b": BASE_JOB_TYPE}, {"a": BASE_JOB_TYPE}, True),
    ],
)
def test_a_change_of_the_policies_changes_the_pod_template_so_the_pods_roll(
    before: dict[str, Any], after: dict[str, Any], rolls: bool
) -> None:
    def parsed(job_types: dict[str, Any]) -> dict[str, JobTypeSpec]:
        return {name: JobTypeSpec.model_validate(spec) for name, spec in job_types.items()}

    old = checksum_of(pool_spec(jobTypes=sorted(before)), parsed(before))
    new = checksum_of(pool_spec(jobTypes=sorted(after)), parsed(after))
    assert (old != new) is rolls


def test_the_policies_checksum_keeps_the_revision_and_annotates_both_tracks() -> None:
    template = pool_spec().template.to_dict()
    canary = {"spec": {"containers": [{"name": "worker", "image": "thumbs:2"}]}}
    workers = Workers(stable_template=template, stable_replicas=1, canary_template=canary, canary_replicas=1)
    plan = plan_children(POOL, pool_spec(), {"resize-image": job_type()}, workers)
    deployments = [manifest for manifest in plan.apply if manifest["kind"] == "Deployment"]
    assert len(deployments) == 2
    annotations = {
        d["spec"]["template"]["metadata"]["annotations"][POLICIES_CHECKSUM_ANNOTATION] for d in deployments
    }
    assert len(annotations) == 1
    assert deployments[0]["metadata"]["labels"]["workerfleet.dev/revision"] == revision_of(template)


FAST = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
NORMAL = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
HEAVY = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
OWN = {"requests": {"cpu": "2"}, "limits": {"cpu": "3", "memory": "1Gi"}}


def lanes(*names: str) -> dict[str, JobTypeSpec]:
    return {
        f"type-{index}": JobTypeSpec.model_validate({"lane": lane, "timeoutSeconds": 60})
        for index, lane in enumerate(names)
    }


@pytest.mark.parametrize(
    ("job_types", "worker", "sidecar", "init", "expected"),
    [
        # each lane its own default for the worker container; sidecars and init containers the smallest
        (lanes("fast"), None, None, None, (FAST, FAST, FAST)),
        (lanes("normal"), None, None, None, (NORMAL, FAST, FAST)),
        (lanes("heavy"), None, None, None, (HEAVY, FAST, FAST)),
        # a pool of several lanes is sized for its heaviest
        (lanes("fast", "heavy", "normal"), None, None, None, (HEAVY, FAST, FAST)),
        (lanes("fast", "normal"), None, None, None, (NORMAL, FAST, FAST)),
        # no JobType found (yet): the middle lane
        ({}, None, None, None, (NORMAL, FAST, FAST)),
        # a container that sets its own resources keeps them, all of them, and only those
        (lanes("heavy"), OWN, None, None, (OWN, FAST, FAST)),
        (lanes("fast"), None, OWN, OWN, (FAST, OWN, OWN)),
        (
            lanes("normal"),
            {"limits": {"memory": "64Mi"}},
            None,
            None,
            ({"limits": {"memory": "64Mi"}}, FAST, FAST),
        ),
        # empty resources are no choice: the default
        (lanes("heavy"), {}, {"requests": {}, "limits": {}}, None, (HEAVY, FAST, FAST)),
    ],
)
def test_containers_get_resources_of_the_pools_lane_unless_they_set_their_own(
    job_types: dict[str, JobTypeSpec],
    worker: dict[str, Any] | None,
    sidecar: dict[str, Any] | None,
    init: dict[str, Any] | None,
    expected: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    def container(name: str, resources: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "name": name,
            "image": f"{name}:1",
            **({"resources": resources} if resources is not None else {}),
        }

    template = {
        "spec": {
            "initContainers": [container("init", init)],
            "containers": [container("worker", worker), container("side", sidecar)],
        }
    }
    spec = pool_spec(jobTypes=sorted(job_types) or ["missing"], template=template)
    pod = by_kind(plan_children(POOL, spec, job_types).apply)["Deployment"]["spec"]["template"]["spec"]
    first, second = pod["containers"]
    assert (first["resources"], second["resources"], pod["initContainers"][0]["resources"]) == expected


def test_no_default_limits_cpu() -> None:
    """A CPU limit throttles a worker that could use an idle core; memory limits keep a node alive."""
    for job_types in (lanes("fast"), lanes("normal"), lanes("heavy")):
        pod = by_kind(plan_children(POOL, pool_spec(jobTypes=sorted(job_types)), job_types).apply)[
            "Deployment"
        ]
        for container in pod["spec"]["template"]["spec"]["containers"]:
            assert "cpu" not in container["resources"]["limits"]
            assert container["resources"]["limits"]["memory"]
