"""Autoscaled pools for the e2e tests: a backlog on each real queue server, the pool and JobType
manifests with fast scaling, and readers of the pool's replicas, conditions and Events."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import redis

from devenv.cluster import Cluster
from devenv.servers import RabbitMQServer, RedisServer

BACKLOG = 400
TARGET_PER_REPLICA = 50
POLLING_INTERVAL_SECONDS = 1


def envelope(number: int) -> str:
    enqueued = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"id": f"job-{number}", "type": "resize", "payload": {}, "enqueuedAt": enqueued, "attempt": 1}
    )


class Backlog(Protocol):
    queue_spec: dict[str, Any]

    def create(self) -> None: ...

    def push(self, count: int) -> None: ...

    def drain(self) -> None: ...


class RedisListBacklog:
    def __init__(self, server: RedisServer) -> None:
        self.key = f"jobs:{uuid.uuid4().hex[:8]}"
        self.client = redis.Redis(host="127.0.0.1", port=server.port)
        self.queue_spec = {"redis": {"address": server.address, "list": self.key}}

    def create(self) -> None:
        """A Redis key exists once something is pushed; an absent list reads as empty."""

    def push(self, count: int) -> None:
        self.client.lpush(self.key, *(envelope(number) for number in range(count)))

    def drain(self) -> None:
        self.client.delete(self.key)


class RedisStreamBacklog:
    def __init__(self, server: RedisServer) -> None:
        self.key = f"stream:{uuid.uuid4().hex[:8]}"
        self.client = redis.Redis(host="127.0.0.1", port=server.port)
        self.queue_spec = {
            "redisStream": {"address": server.address, "stream": self.key, "consumerGroup": "workers"}
        }

    def create(self) -> None:
        """An absent stream reads as empty."""

    def push(self, count: int) -> None:
        with self.client.pipeline() as pipeline:
            for number in range(count):
                pipeline.xadd(self.key, {"job": envelope(number)})
            pipeline.execute()

    def drain(self) -> None:
        self.client.delete(self.key)


class RabbitMQBacklog:
    def __init__(self, server: RabbitMQServer) -> None:
        self.name = f"jobs-{uuid.uuid4().hex[:8]}"
        self.url = f"amqp://guest:guest@{server.address}/"
        self.queue_spec = {"rabbitmq": {"address": server.address, "queue": self.name}}

    async def _with_queue(self, count: int, purge: bool) -> None:
        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.name, durable=True)
            for number in range(count):
                await channel.default_exchange.publish(aio_pika.Message(envelope(number).encode()), self.name)
            if purge:
                await queue.purge()

    def create(self) -> None:
        """Queues are declared before use, by producers or workers; a missing one is an error."""
        asyncio.run(self._with_queue(0, purge=False))

    def push(self, count: int) -> None:
        asyncio.run(self._with_queue(count, purge=False))

    def drain(self) -> None:
        asyncio.run(self._with_queue(0, purge=True))


def resize_job_type() -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "resize"},
        "spec": {"lane": "fast", "timeoutSeconds": 30},
    }


def autoscaled_pool(name: str, queue: dict[str, Any], **autoscaling: Any) -> dict[str, Any]:
    fast_behavior = {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 10, "periodSeconds": 15}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        },
    }
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "jobTypes": ["resize"],
            "replicas": autoscaling.pop("replicas", 0),
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
            "queue": queue,
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": 10,
                "targetDepthPerReplica": TARGET_PER_REPLICA,
                "pollingIntervalSeconds": POLLING_INTERVAL_SECONDS,
                "cooldownSeconds": 5,
                "behavior": fast_behavior,
                **autoscaling,
            },
        },
    }


def pool_body(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        cluster.kubectl("get", "wp", name, "-n", namespace, "-o", "json").stdout
    )
    return body


def pool_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    replicas: int = pool_body(cluster, namespace, name)["spec"]["replicas"]
    return replicas


def pool_condition(
    cluster: Cluster, namespace: str, name: str, condition_type: str
) -> tuple[str, str] | None:
    for condition in (pool_body(cluster, namespace, name).get("status") or {}).get("conditions") or []:
        if condition["type"] == condition_type:
            return condition["status"], condition["reason"]
    return None


def event_reasons(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
    )["items"]
    return [event["reason"] for event in events]


def served_depth(cluster: Cluster, namespace: str, pool: str) -> int | None:
    """The pool's queue depth as the external metrics API serves it to the HPA; None while not served."""
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/workerfleet_queue_depth"
        f"?labelSelector=workerfleet.dev/pool%3D{pool}"
    )
    result = cluster.kubectl("get", "--raw", path, check=False)
    if result.returncode != 0:
        return None
    items = json.loads(result.stdout)["items"]
    return int(items[0]["value"]) if items else None
