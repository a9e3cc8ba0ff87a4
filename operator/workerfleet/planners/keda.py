"""A KEDA ScaledObject (and its TriggerAuthentication) for pools with `autoscaling.engine: keda`.

Only one external metrics server can be registered in a cluster; where that is KEDA's, KEDA scales
the WorkerPool through its scale subresource, with the same targets, activation, cooldown,
fallback and HPA behavior the pool's spec asks of the built-in engine.
"""

from __future__ import annotations

from typing import Any

from workerfleet.api.base import API_VERSION
from workerfleet.api.common import SecretKeySelector
from workerfleet.api.workerpool import Autoscaling, Queue, RedisList, RedisStream

Manifest = dict[str, Any]

KEDA_API_VERSION = "keda.sh/v1alpha1"
KEDA_KINDS = ("ScaledObject", "TriggerAuthentication")


Secrets = list[tuple[str, SecretKeySelector]]


def _redis_basics(redis: RedisList | RedisStream) -> tuple[dict[str, str], Secrets]:
    metadata = {"address": redis.address, "databaseIndex": str(redis.database)}
    secrets: Secrets = []
    if redis.tls is not None:
        metadata["enableTLS"] = "true"
        if redis.tls.ca_secret_ref is not None:  # KEDA's redis scalers read `ca` from the authentication
            secrets.append(("ca", redis.tls.ca_secret_ref))
    if redis.auth is not None:
        secrets.append(("password", redis.auth.password_secret_ref))
        if redis.auth.username_secret_ref is not None:
            secrets.append(("username", redis.auth.username_secret_ref))
    return metadata, secrets


def _trigger(queue: Queue, scaling: Autoscaling) -> tuple[Manifest, Secrets]:
    """The trigger for the pool's backend and the Secret keys its authentication needs."""
    target, activation = str(scaling.target_depth_per_replica), str(scaling.activation_depth)
    if queue.redis is not None:
        metadata, secrets = _redis_basics(queue.redis)
        metadata |= {
            "listName": queue.redis.list_key,
            "listLength": target,
            "activationListLength": activation,
        }
        return {"type": "redis", "metadata": metadata}, secrets
    if queue.redis_stream is not None:
        metadata, secrets = _redis_basics(queue.redis_stream)
        metadata |= {
            "stream": queue.redis_stream.stream,
            "consumerGroup": queue.redis_stream.consumer_group,
            "lagCount": target,
            "activationLagCount": activation,
        }
        return {"type": "redis-streams", "metadata": metadata}, secrets
    if queue.rabbitmq is not None:
        rabbit = queue.rabbitmq
        scheme = "amqps" if rabbit.tls is not None else "amqp"
        vhost = "" if rabbit.vhost == "/" else rabbit.vhost
        metadata = {
            "protocol": "amqp",
            "host": f"{scheme}://{rabbit.address}/{vhost}",
            "queueName": rabbit.queue,
            "mode": "QueueLength",
            "value": target,
            "activationValue": activation,
        }
        secrets = []
        if rabbit.auth is not None:
            secrets = [
                ("username", rabbit.auth.username_secret_ref),
                ("password", rabbit.auth.password_secret_ref),
            ]
        return {"type": "rabbitmq", "metadata": metadata}, secrets
    if queue.prometheus is not None:
        prometheus = queue.prometheus
        metadata = {
            "serverAddress": str(prometheus.address),
            "query": prometheus.query,
            "threshold": target,
            "activationThreshold": activation,
            "ignoreNullValues": "true",
        }
        secrets = []
        if prometheus.bearer_token_secret_ref is not None:
            metadata["authModes"] = "bearer"
            secrets.append(("bearerToken", prometheus.bearer_token_secret_ref))
        return {"type": "prometheus", "metadata": metadata}, secrets
    raise ValueError("the queue names no backend")  # the CRD's CEL rule makes this unreachable


def keda_objects(
    pool: str, namespace: str, metadata: Manifest, queue: Queue, scaling: Autoscaling
) -> list[Manifest]:
    """ScaledObject (plus a TriggerAuthentication when the queue needs credentials) for one pool.

    `metadata` supplies the owner reference and labels every child carries.
    """
    trigger, secrets = _trigger(queue, scaling)
    objects: list[Manifest] = []
    if secrets:
        auth_name = f"{pool}-queue"
        objects.append(
            {
                "apiVersion": KEDA_API_VERSION,
                "kind": "TriggerAuthentication",
                "metadata": {**metadata, "name": auth_name, "namespace": namespace},
                "spec": {
                    "secretTargetRef": [
                        {"parameter": parameter, "name": secret.name, "key": secret.key}
                        for parameter, secret in secrets
                    ]
                },
            }
        )
        trigger["authenticationRef"] = {"name": auth_name}
    spec: Manifest = {
        "scaleTargetRef": {"apiVersion": API_VERSION, "kind": "WorkerPool", "name": pool},
        "pollingInterval": scaling.polling_interval_seconds,
        "cooldownPeriod": scaling.cooldown_seconds,
        "minReplicaCount": scaling.min_replicas,
        "maxReplicaCount": scaling.max_replicas,
        "triggers": [trigger],
    }
    if scaling.fallback is not None:
        spec["fallback"] = {
            "failureThreshold": scaling.fallback.failure_threshold,
            "replicas": scaling.fallback.replicas,
        }
    if scaling.behavior is not None:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": scaling.behavior.to_dict()}}
    objects.append(
        {
            "apiVersion": KEDA_API_VERSION,
            "kind": "ScaledObject",
            "metadata": {**metadata, "name": pool, "namespace": namespace},
            "spec": spec,
        }
    )
    return objects
