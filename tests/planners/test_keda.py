"""The KEDA objects for pools with engine keda: table tests per backend."""

from __future__ import annotations

from typing import Any

import pytest

from workerfleet.api.workerpool import Autoscaling, Queue
from workerfleet.planners.keda import keda_objects, keda_secret_names

OWNED = {
    "labels": {"workerfleet.dev/pool": "thumbs"},
    "ownerReferences": [{"kind": "WorkerPool", "name": "thumbs"}],
}
SCALING = Autoscaling.model_validate(
    {
        "engine": "keda",
        "minReplicas": 0,
        "maxReplicas": 20,
        "targetDepthPerReplica": 25,
        "activationDepth": 3,
        "pollingIntervalSeconds": 7,
        "cooldownSeconds": 120,
        "fallback": {"failureThreshold": 4, "replicas": 5},
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}},
    }
)
SECRET = {"name": "queue-secret", "key": "password"}
USER = {"name": "queue-secret", "key": "user"}


@pytest.mark.parametrize(
    ("queue", "trigger_type", "metadata", "secret_parameters"),
    [
        (
            {"redis": {"address": "redis:6379", "list": "jobs"}},
            "redis",
            {
                "address": "redis:6379",
                "databaseIndex": "0",
                "listName": "jobs",
                "listLength": "25",
                "activationListLength": "3",
            },
            [],
        ),
        (
            {
                "redis": {
                    "address": "redis:6379",
                    "list": "jobs",
                    "auth": {"passwordSecretRef": SECRET},
                    "tls": {},
                }
            },
            "redis",
            {
                "address": "redis:6379",
                "databaseIndex": "0",
                "listName": "jobs",
                "listLength": "25",
                "activationListLength": "3",
                "enableTLS": "true",
            },
            ["password"],
        ),
        (
            {
                "redisStream": {
                    "address": "redis:6379",
                    "stream": "s",
                    "consumerGroup": "g",
                    "tls": {"caSecretRef": {"name": "queue-ca", "key": "ca.crt"}},
                }
            },
            "redis-streams",
            {
                "address": "redis:6379",
                "databaseIndex": "0",
                "stream": "s",
                "consumerGroup": "g",
                "lagCount": "25",
                "activationLagCount": "3",
                "enableTLS": "true",
            },
            ["ca"],
        ),
        (
            {"redisStream": {"address": "redis:6379", "stream": "s", "consumerGroup": "g"}},
            "redis-streams",
            {
                "address": "redis:6379",
                "databaseIndex": "0",
                "stream": "s",
                "consumerGroup": "g",
                "lagCount": "25",
                "activationLagCount": "3",
            },
            [],
        ),
        (
            {
                "rabbitmq": {
                    "address": "rabbit:5672",
                    "vhost": "media",
                    "queue": "jobs",
                    "auth": {"usernameSecretRef": USER, "passwordSecretRef": SECRET},
                }
            },
            "rabbitmq",
            {
                "protocol": "amqp",
                "host": "amqp://rabbit:5672/media",
                "queueName": "jobs",
                "mode": "QueueLength",
                "value": "25",
                "activationValue": "3",
            },
            ["username", "password"],
        ),
        (
            {
                "prometheus": {
                    "address": "https://prometheus:9090",
                    "query": "sum(depth)",
                    "bearerTokenSecretRef": SECRET,
                }
            },
            "prometheus",
            {
                "serverAddress": "https://prometheus:9090",
                "query": "sum(depth)",
                "threshold": "25",
                "activationThreshold": "3",
                "ignoreNullValues": "true",
                "authModes": "bearer",
            },
            ["bearerToken"],
        ),
    ],
)
def test_trigger_per_backend(
    queue: dict[str, Any], trigger_type: str, metadata: dict[str, str], secret_parameters: list[str]
) -> None:
    objects = keda_objects("thumbs", "media", OWNED, Queue.model_validate(queue), SCALING)
    scaled = objects[-1]
    assert scaled["kind"] == "ScaledObject"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == trigger_type
    assert trigger["metadata"] == metadata
    if secret_parameters:
        authentication = objects[0]
        assert authentication["kind"] == "TriggerAuthentication"
        assert [ref["parameter"] for ref in authentication["spec"]["secretTargetRef"]] == secret_parameters
        assert trigger["authenticationRef"] == {"name": authentication["metadata"]["name"]}
    else:
        assert len(objects) == 1
        assert "authenticationRef" not in trigger


def test_scaled_object_carries_the_pool_settings_and_targets_the_pool() -> None:
    [scaled] = keda_objects(
        "thumbs", "media", OWNED, Queue.model_validate({"redis": {"address": "r:1", "list": "l"}}), SCALING
    )
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "name": "thumbs",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 20)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (7, 120)
    assert spec["fallback"] == {"failureThreshold": 4, "replicas": 5}
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 30}
    }
    assert scaled["metadata"]["ownerReferences"] == OWNED["ownerReferences"]
    assert scaled["metadata"]["namespace"] == "media"


@pytest.mark.parametrize(
    ("queue", "secrets"),
    [
        ({"redis": {"address": "redis:6379", "list": "jobs"}}, []),
        (
            {"redis": {"address": "redis:6379", "list": "jobs", "auth": {"passwordSecretRef": SECRET}}},
            ["queue-secret"],
        ),
        # a Secret holding both user and password is named once
        (
            {
                "rabbitmq": {
                    "address": "rabbit:5672",
                    "queue": "jobs",
                    "auth": {"usernameSecretRef": USER, "passwordSecretRef": SECRET},
                }
            },
            ["queue-secret"],
        ),
        (
            {
                "redisStream": {
                    "address": "redis:6379",
                    "stream": "s",
                    "consumerGroup": "g",
                    "auth": {"passwordSecretRef": SECRET},
                    "tls": {"caSecretRef": {"name": "queue-ca", "key": "ca.crt"}},
                }
            },
            ["queue-ca", "queue-secret"],
        ),
        # the idempotency store's Secret is the workers', never KEDA's
        (
            {
                "rabbitmq": {
                    "address": "rabbit:5672",
                    "queue": "jobs",
                    "idempotencyStore": {
                        "address": "redis:6379",
                        "auth": {"passwordSecretRef": {"name": "store", "key": "password"}},
                    },
                }
            },
            [],
        ),
    ],
)
def test_the_secrets_keda_would_be_given_are_those_its_trigger_authentication_names(
    queue: dict[str, Any], secrets: list[str]
) -> None:
    parsed = Queue.model_validate(queue)
    assert keda_secret_names(parsed, SCALING) == secrets
    named = [
        reference["name"]
        for manifest in keda_objects("thumbs", "media", OWNED, parsed, SCALING)
        if manifest["kind"] == "TriggerAuthentication"
        for reference in manifest["spec"]["secretTargetRef"]
    ]
    assert sorted(set(named)) == secrets
