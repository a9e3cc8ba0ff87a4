"""Pick the depth source for a pool's queue spec."""

from __future__ import annotations

from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Queue
from workerfleet.backends.base import DepthSource
from workerfleet.backends.prometheus import PrometheusDepth
from workerfleet.backends.rabbitmq import RabbitMQDepth
from workerfleet.backends.redis_list import RedisListDepth
from workerfleet.backends.redis_stream import RedisStreamDepth


def open_source(queue: Queue, credentials: Credentials) -> DepthSource:
    if queue.redis is not None:
        return RedisListDepth(queue.redis, credentials)
    if queue.redis_stream is not None:
        return RedisStreamDepth(queue.redis_stream, credentials)
    if queue.rabbitmq is not None:
        return RabbitMQDepth(queue.rabbitmq, credentials)
    if queue.prometheus is not None:
        return PrometheusDepth(queue.prometheus, credentials)
    raise ValueError("the queue names no backend")  # the CRD's CEL rule makes this unreachable
