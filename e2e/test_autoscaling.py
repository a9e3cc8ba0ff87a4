"""Queue-depth autoscaling end to end: real queues, the operator's metrics API, the real HPA controller."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import pytest
import redis

from devenv.cluster import Cluster
from devenv.servers import RabbitMQServer, RedisServer
from devenv.waiting import eventually

BACKLOG = 400
TARGET_PER_REPLICA = 50
SCALE_TIMEOUT_SECONDS = 150


def _envelope(number: int) -> str:
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
        self.client.lpush(self.key, *(_envelope(number) for number in range(count)))

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
                pipeline.xadd(self.key, {"job": _envelope(number)})
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
                await channel.default_exchange.publish(
                    aio_pika.Message(_envelope(number).encode()), self.name
                )
            if purge:
                await queue.purge()

    def create(self) -> None:
        """Queues are declared before use, by producers or workers; a missing one is an error."""
        asyncio.run(self._with_queue(0, purge=False))

    def push(self, count: int) -> None:
        asyncio.run(self._with_queue(count, purge=False))

    def drain(self) -> None:
        asyncio.run(self._with_queue(0, purge=True))


@pytest.fixture(params=["redis-list", "redis-stream", "rabbitmq"])
def backlog(request: pytest.FixtureRequest) -> Backlog:
    if request.param == "rabbitmq":
        return RabbitMQBacklog(request.getfixturevalue("rabbitmq_server"))
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisListBacklog(server) if request.param == "redis-list" else RedisStreamBacklog(server)


def _job_type() -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "resize"},
        "spec": {"lane": "fast", "timeoutSeconds": 30},
    }


def _pool(name: str, queue: dict[str, Any], **autoscaling: Any) -> dict[str, Any]:
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
                "pollingIntervalSeconds": 1,
                "cooldownSeconds": 5,
                "behavior": fast_behavior,
                **autoscaling,
            },
        },
    }


def _pool_body(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        cluster.kubectl("get", "wp", name, "-n", namespace, "-o", "json").stdout
    )
    return body


def _replicas(cluster: Cluster, namespace: str, name: str) -> int:
    replicas: int = _pool_body(cluster, namespace, name)["spec"]["replicas"]
    return replicas


def _condition(cluster: Cluster, namespace: str, name: str, condition_type: str) -> tuple[str, str] | None:
    for condition in (_pool_body(cluster, namespace, name).get("status") or {}).get("conditions") or []:
        if condition["type"] == condition_type:
            return condition["status"], condition["reason"]
    return None


def _event_reasons(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
    )["items"]
    return [event["reason"] for event in events]


def _served_depth(cluster: Cluster, namespace: str, pool: str) -> int | None:
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/workerfleet_queue_depth"
        f"?labelSelector=workerfleet.dev/pool%3D{pool}"
    )
    result = cluster.kubectl("get", "--raw", path, check=False)
    if result.returncode != 0:
        return None
    items = json.loads(result.stdout)["items"]
    return int(items[0]["value"]) if items else None


def test_backlog_scales_the_pool_from_zero_to_target_and_back(
    operator: Cluster, namespace: str, backlog: Backlog
) -> None:
    # Given an autoscaled pool at zero replicas over an empty queue
    backlog.create()
    operator.apply(_job_type(), _pool("thumbs", backlog.queue_spec), namespace=namespace)
    eventually(
        lambda: _condition(operator, namespace, "thumbs", "QueueReachable") == ("True", "DepthRead"),
        what="the queue to be read",
        timeout=60,
    )
    assert _replicas(operator, namespace, "thumbs") == 0

    # When 400 jobs arrive, 50 per replica being the target
    backlog.push(BACKLOG)

    # Then the external metrics API serves the live depth, the operator wakes the pool,
    # and the HPA takes it to 400 / 50 = 8 replicas
    eventually(
        lambda: _served_depth(operator, namespace, "thumbs") == BACKLOG, what="depth 400 served", timeout=60
    )
    eventually(
        lambda: _replicas(operator, namespace, "thumbs") == 8,
        what="8 replicas",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )
    assert "Activated" in _event_reasons(operator, namespace, "thumbs")

    # When the queue is drained
    backlog.drain()

    # Then the HPA brings it down, and after the cooldown the operator takes it to zero
    eventually(
        lambda: _replicas(operator, namespace, "thumbs") == 0,
        what="scale to zero after the cooldown",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )
    assert "Deactivated" in _event_reasons(operator, namespace, "thumbs")


def test_unreachable_queue_holds_fallback_replicas_and_recovers(
    operator: Cluster, namespace: str, own_redis: RedisServer
) -> None:
    # Given a pool at one replica with a fallback of 3 after 2 failed reads
    queue = {"redis": {"address": own_redis.address, "list": "jobs"}}
    fallback = {"failureThreshold": 2, "replicas": 3}
    operator.apply(
        _job_type(), _pool("thumbs", queue, replicas=1, minReplicas=1, fallback=fallback), namespace=namespace
    )
    eventually(
        lambda: _condition(operator, namespace, "thumbs", "QueueReachable") == ("True", "DepthRead"),
        what="the queue to be read",
        timeout=60,
    )

    # When the Redis server goes away
    own_redis.stop()

    # Then the pool says so, holds the fallback replicas, and a Warning Event tells why
    eventually(
        lambda: _condition(operator, namespace, "thumbs", "Fallback") == ("True", "FallbackActive"),
        what="Fallback=True",
        timeout=60,
    )
    assert _condition(operator, namespace, "thumbs", "QueueReachable") == ("False", "QueueUnreachable")
    eventually(
        lambda: _replicas(operator, namespace, "thumbs") == 3,
        what="the fallback replicas",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )
    assert {"QueueUnreachable", "FallbackActive"} <= set(_event_reasons(operator, namespace, "thumbs"))

    # When Redis is back
    own_redis.start()

    # Then the pool recovers by itself: no operator restart, scaling on depth again
    eventually(
        lambda: _condition(operator, namespace, "thumbs", "Fallback") == ("False", "QueueReadable"),
        what="Fallback=False",
        timeout=60,
    )
    assert _condition(operator, namespace, "thumbs", "QueueReachable") == ("True", "DepthRead")
    assert _condition(operator, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth")
    assert "FallbackEnded" in _event_reasons(operator, namespace, "thumbs")
    eventually(
        lambda: _replicas(operator, namespace, "thumbs") == 1,
        what="back to one replica on an empty queue",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )


def _stays(cluster: Cluster, namespace: str, name: str, replicas: int, seconds: float) -> list[int]:
    """Replica counts sampled once a second for `seconds` (enough HPA syncs to have acted)."""
    samples = []
    for _ in range(int(seconds)):
        samples.append(_replicas(cluster, namespace, name))
        time.sleep(1)
    return [sample for sample in samples if sample != replicas]


def test_pause_annotations_hold_or_set_the_replicas(
    operator: Cluster, namespace: str, redis_server: RedisServer
) -> None:
    backlog = RedisListBacklog(redis_server)
    operator.apply(
        _job_type(), _pool("thumbs", backlog.queue_spec, replicas=2, minReplicas=1), namespace=namespace
    )
    eventually(
        lambda: _condition(operator, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth"),
        what="scaling on depth",
        timeout=60,
    )

    # When autoscaling is paused and a backlog arrives that would ask for 8 replicas
    operator.kubectl("annotate", "wp", "thumbs", "-n", namespace, "workerfleet.dev/autoscaling-paused=true")
    eventually(
        lambda: _condition(operator, namespace, "thumbs", "ScalingActive") == ("False", "AutoscalingPaused"),
        what="ScalingActive=False AutoscalingPaused",
        timeout=30,
    )
    backlog.push(BACKLOG)

    # Then the pool holds its 2 replicas through several HPA syncs
    assert _stays(operator, namespace, "thumbs", 2, seconds=15) == []

    # When a replica count is given instead
    operator.kubectl(
        "annotate",
        "wp",
        "thumbs",
        "-n",
        namespace,
        "workerfleet.dev/autoscaling-paused-replicas=4",
        "--overwrite",
    )

    # Then the pool goes to it and stays there
    eventually(
        lambda: _replicas(operator, namespace, "thumbs") == 4, what="the paused replica count", timeout=60
    )
    assert _stays(operator, namespace, "thumbs", 4, seconds=12) == []

    # When the pause is lifted, the backlog's 8 replicas follow
    operator.kubectl(
        "annotate",
        "wp",
        "thumbs",
        "-n",
        namespace,
        "workerfleet.dev/autoscaling-paused-",
        "workerfleet.dev/autoscaling-paused-replicas-",
    )
    eventually(
        lambda: _replicas(operator, namespace, "thumbs") == 8,
        what="8 replicas",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )
    backlog.drain()


def test_a_paused_count_above_max_replicas_is_held_at_max_without_a_fight(
    operator: Cluster, namespace: str, redis_server: RedisServer
) -> None:
    # Given an autoscaled pool with maxReplicas 10
    backlog = RedisListBacklog(redis_server)
    operator.apply(
        _job_type(), _pool("thumbs", backlog.queue_spec, replicas=2, minReplicas=1), namespace=namespace
    )
    eventually(
        lambda: _condition(operator, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth"),
        what="scaling on depth",
        timeout=60,
    )

    # When autoscaling is paused at 15 replicas, above maxReplicas
    operator.kubectl(
        "annotate", "wp", "thumbs", "-n", namespace, "workerfleet.dev/autoscaling-paused-replicas=15"
    )

    # Then the pool is held at 10 through several HPA syncs, instead of going 15 -> 10 -> 15
    eventually(lambda: _replicas(operator, namespace, "thumbs") == 10, what="held at maxReplicas", timeout=60)
    assert _stays(operator, namespace, "thumbs", 10, seconds=12) == []
