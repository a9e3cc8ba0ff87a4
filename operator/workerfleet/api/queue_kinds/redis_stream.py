"""A Redis stream read through a consumer group (`spec.queue.redisStream`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workerfleet.api.queue_kinds._redis import keda_basics
from workerfleet.api.queue_kinds.base import KedaTrigger, ServerKind

if TYPE_CHECKING:
    from workerfleet.api.workerpool import RedisStream


class RedisStreamKind(ServerKind["RedisStream"]):
    name = "redisStream"
    field = "redis_stream"
    product = "Redis"
    keda_takes_ca = True

    def queue_name(self, spec: RedisStream) -> str:
        return spec.stream

    def describe(self, spec: RedisStream) -> str:
        return f"Redis stream {spec.stream} at {spec.address}"

    def keda_trigger(self, spec: RedisStream, target: str, activation: str) -> KedaTrigger:
        metadata, secrets = keda_basics(spec)
        metadata |= {
            "stream": spec.stream,
            "consumerGroup": spec.consumer_group,
            "lagCount": target,
            "activationLagCount": activation,
        }
        return KedaTrigger("redis-streams", metadata, secrets)


KIND = RedisStreamKind()
