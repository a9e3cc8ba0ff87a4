"""Pick the depth source for a pool's queue spec: the one place the operator maps a queue kind to its
client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workerfleet.api.credentials import Credentials
from workerfleet.api.queue_kinds import kind_of, prometheus, rabbitmq, redis_list, redis_stream
from workerfleet.api.workerpool import Queue
from workerfleet.backends.base import DepthSource
from workerfleet.backends.prometheus import PrometheusDepth
from workerfleet.backends.rabbitmq import RabbitMQDepth
from workerfleet.backends.redis_list import RedisListDepth
from workerfleet.backends.redis_stream import RedisStreamDepth

DEPTH_SOURCES: dict[str, Callable[[Any, Credentials], DepthSource]] = {
    redis_list.KIND.name: RedisListDepth,
    redis_stream.KIND.name: RedisStreamDepth,
    rabbitmq.KIND.name: RabbitMQDepth,
    prometheus.KIND.name: PrometheusDepth,
}
"""Each queue kind's depth source, by the kind's name; every kind has one."""


def open_source(queue: Queue, credentials: Credentials) -> DepthSource:
    kind, backend = kind_of(queue)
    return DEPTH_SOURCES[kind.name](backend, credentials)
