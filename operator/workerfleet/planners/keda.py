"""A KEDA ScaledObject (and its TriggerAuthentication) for pools with `autoscaling.engine: keda`.

Only one external metrics server can be registered in a cluster; where that is KEDA's, KEDA scales
the WorkerPool through its scale subresource, with the same targets, activation, cooldown,
fallback and HPA behavior the pool's spec asks of the built-in engine.
"""

from __future__ import annotations

from typing import Any

from workerfleet.api.base import API_VERSION
from workerfleet.api.common import SecretKeySelector
from workerfleet.api.queue_kinds import kind_of
from workerfleet.api.workerpool import Autoscaling, Queue

Manifest = dict[str, Any]

KEDA_API_VERSION = "keda.sh/v1alpha1"
KEDA_KINDS = ("ScaledObject", "TriggerAuthentication")


def _trigger(queue: Queue, scaling: Autoscaling) -> tuple[Manifest, list[tuple[str, SecretKeySelector]]]:
    """The trigger for the pool's backend and the Secret keys its authentication needs."""
    kind, backend = kind_of(queue)
    trigger = kind.keda_trigger(backend, str(scaling.target_depth_per_replica), str(scaling.activation_depth))
    return {"type": trigger.type, "metadata": trigger.metadata}, trigger.secrets


def keda_secret_names(queue: Queue, scaling: Autoscaling) -> list[str]:
    """The Secrets the pool's TriggerAuthentication would hand to KEDA, each once."""
    _, secrets = _trigger(queue, scaling)
    return sorted({secret.name for _, secret in secrets})


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
