"""Queue-depth autoscaling end to end: real queues, the operator's metrics API, the real HPA controller."""

from __future__ import annotations

import time

import pytest

from devenv.cluster import Cluster
from devenv.servers import RedisServer
from devenv.waiting import eventually
from e2e.autoscaled_pools import (
    BACKLOG,
    Backlog,
    RabbitMQBacklog,
    RedisListBacklog,
    RedisStreamBacklog,
    autoscaled_pool,
    event_reasons,
    pool_condition,
    pool_replicas,
    resize_job_type,
    served_depth,
)

SCALE_TIMEOUT_SECONDS = 150


@pytest.fixture(params=["redis-list", "redis-stream", "rabbitmq"])
def backlog(request: pytest.FixtureRequest) -> Backlog:
    if request.param == "rabbitmq":
        return RabbitMQBacklog(request.getfixturevalue("rabbitmq_server"))
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisListBacklog(server) if request.param == "redis-list" else RedisStreamBacklog(server)


def test_backlog_scales_the_pool_from_zero_to_target_and_back(
    operator: Cluster, namespace: str, backlog: Backlog
) -> None:
    # Given an autoscaled pool at zero replicas over an empty queue
    backlog.create()
    operator.apply(resize_job_type(), autoscaled_pool("thumbs", backlog.queue_spec), namespace=namespace)
    eventually(
        lambda: pool_condition(operator, namespace, "thumbs", "QueueReachable") == ("True", "DepthRead"),
        what="the queue to be read",
        timeout=60,
    )
    assert pool_replicas(operator, namespace, "thumbs") == 0

    # When 400 jobs arrive, 50 per replica being the target
    backlog.push(BACKLOG)

    # Then the external metrics API serves the live depth, the operator wakes the pool,
    # and the HPA takes it to 400 / 50 = 8 replicas
    eventually(
        lambda: served_depth(operator, namespace, "thumbs") == BACKLOG, what="depth 400 served", timeout=60
    )
    eventually(
        lambda: pool_replicas(operator, namespace, "thumbs") == 8,
        what="8 replicas",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )
    assert "Activated" in event_reasons(operator, namespace, "thumbs")

    # When the queue is drained
    backlog.drain()

    # Then the HPA brings it down, and after the cooldown the operator takes it to zero
    eventually(
        lambda: pool_replicas(operator, namespace, "thumbs") == 0,
        what="scale to zero after the cooldown",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )
    assert "Deactivated" in event_reasons(operator, namespace, "thumbs")


def test_unreachable_queue_holds_fallback_replicas_and_recovers(
    operator: Cluster, namespace: str, own_redis: RedisServer
) -> None:
    # Given a pool at one replica with a fallback of 3 after 2 failed reads
    queue = {"redis": {"address": own_redis.address, "list": "jobs"}}
    fallback = {"failureThreshold": 2, "replicas": 3}
    operator.apply(
        resize_job_type(),
        autoscaled_pool("thumbs", queue, replicas=1, minReplicas=1, fallback=fallback),
        namespace=namespace,
    )
    eventually(
        lambda: pool_condition(operator, namespace, "thumbs", "QueueReachable") == ("True", "DepthRead"),
        what="the queue to be read",
        timeout=60,
    )

    # When the Redis server goes away
    own_redis.stop()

    # Then the pool says so, holds the fallback replicas, and a Warning Event tells why
    eventually(
        lambda: pool_condition(operator, namespace, "thumbs", "Fallback") == ("True", "FallbackActive"),
        what="Fallback=True",
        timeout=60,
    )
    assert pool_condition(operator, namespace, "thumbs", "QueueReachable") == ("False", "QueueUnreachable")
    eventually(
        lambda: pool_replicas(operator, namespace, "thumbs") == 3,
        what="the fallback replicas",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )
    assert {"QueueUnreachable", "FallbackActive"} <= set(event_reasons(operator, namespace, "thumbs"))

    # When Redis is back
    own_redis.start()

    # Then the pool recovers by itself: no operator restart, scaling on depth again
    eventually(
        lambda: pool_condition(operator, namespace, "thumbs", "Fallback") == ("False", "QueueReadable"),
        what="Fallback=False",
        timeout=60,
    )
    assert pool_condition(operator, namespace, "thumbs", "QueueReachable") == ("True", "DepthRead")
    assert pool_condition(operator, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth")
    assert "FallbackEnded" in event_reasons(operator, namespace, "thumbs")
    eventually(
        lambda: pool_replicas(operator, namespace, "thumbs") == 1,
        what="back to one replica on an empty queue",
        timeout=SCALE_TIMEOUT_SECONDS,
        interval=2,
    )


def _stays(cluster: Cluster, namespace: str, name: str, replicas: int, seconds: float) -> list[int]:
    """Replica counts sampled once a second for `seconds` (enough HPA syncs to have acted)."""
    samples = []
    for _ in range(int(seconds)):
        samples.append(pool_replicas(cluster, namespace, name))
        time.sleep(1)
    return [sample for sample in samples if sample != replicas]


def test_pause_annotations_hold_or_set_the_replicas(
    operator: Cluster, namespace: str, redis_server: RedisServer
) -> None:
    backlog = RedisListBacklog(redis_server)
    operator.apply(
        resize_job_type(),
        autoscaled_pool("thumbs", backlog.queue_spec, replicas=2, minReplicas=1),
        namespace=namespace,
    )
    eventually(
        lambda: (
            pool_condition(operator, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth")
        ),
        what="scaling on depth",
        timeout=60,
    )

    # When autoscaling is paused and a backlog arrives that would ask for 8 replicas
    operator.kubectl("annotate", "wp", "thumbs", "-n", namespace, "workerfleet.dev/autoscaling-paused=true")
    eventually(
        lambda: (
            pool_condition(operator, namespace, "thumbs", "ScalingActive") == ("False", "AutoscalingPaused")
        ),
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
        lambda: pool_replicas(operator, namespace, "thumbs") == 4, what="the paused replica count", timeout=60
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
        lambda: pool_replicas(operator, namespace, "thumbs") == 8,
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
        resize_job_type(),
        autoscaled_pool("thumbs", backlog.queue_spec, replicas=2, minReplicas=1),
        namespace=namespace,
    )
    eventually(
        lambda: (
            pool_condition(operator, namespace, "thumbs", "ScalingActive") == ("True", "ScalingOnQueueDepth")
        ),
        what="scaling on depth",
        timeout=60,
    )

    # When autoscaling is paused at 15 replicas, above maxReplicas
    operator.kubectl(
        "annotate", "wp", "thumbs", "-n", namespace, "workerfleet.dev/autoscaling-paused-replicas=15"
    )

    # Then the pool is held at 10 through several HPA syncs, instead of going 15 -> 10 -> 15
    eventually(
        lambda: pool_replicas(operator, namespace, "thumbs") == 10, what="held at maxReplicas", timeout=60
    )
    assert _stays(operator, namespace, "thumbs", 10, seconds=12) == []
