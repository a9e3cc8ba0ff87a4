"""A Redis list (`spec.queue.redis`): producers push jobs onto it, workers pop them off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workerfleet.api.queue_kinds._redis import keda_basics
from workerfleet.api.queue_kinds.base import KedaTrigger, ServerKind

if TYPE_CHECKING:
    from workerfleet.api.workerpool import RedisList


class RedisListKind(ServerKind["RedisList"]):
    name = "redis"
    field = "redis"
    product = "Redis"
    keda_takes_ca = True

    def queue_name(self, spec: RedisList) -> str:
        return spec.list_key

    def describe(self, spec: RedisList) -> str:
        return f"Redis list {spec.list_key} at {spec.address}"

    def keda_trigger(self, spec: RedisList, target: str, activation: str) -> KedaTrigger:
        metadata, secrets = keda_basics(spec)
        metadata |= {"listName": spec.list_key, "listLength": target, "activationListLength": activation}
        return KedaTrigger("redis", metadata, secrets)


KIND = RedisListKind()
