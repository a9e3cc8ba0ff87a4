"""A Redis list (`spec.queue.redis`): producers push jobs onto it, workers pop them off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workerfleet.api.queue_kinds._redis import keda_basics
from workerfleet.api.queue_kinds.base import (
    Allowlist,
    CredentialNeeds,
    KedaTrigger,
    WorkerNeeds,
    server_needs,
)

if TYPE_CHECKING:
    from workerfleet.api.workerpool import RedisList


class RedisListKind:
    name = "redis"
    field = "redis"
    product = "Redis"
    keda_takes_ca = True

    def queue_name(self, spec: RedisList) -> str:
        return spec.list_key

    def describe(self, spec: RedisList) -> str:
        return f"Redis list {spec.list_key} at {spec.address}"

    def address(self, spec: RedisList) -> tuple[str, Allowlist]:
        return spec.address, Allowlist.QUEUES

    def credentials(self, spec: RedisList) -> CredentialNeeds:
        return server_needs(spec.auth, spec.tls)

    def keda_trigger(self, spec: RedisList, target: str, activation: str) -> KedaTrigger:
        metadata, secrets = keda_basics(spec)
        metadata |= {"listName": spec.list_key, "listLength": target, "activationListLength": activation}
        return KedaTrigger("redis", metadata, secrets)

    def worker_needs(self, spec: RedisList) -> WorkerNeeds:
        return WorkerNeeds(self.credentials(spec))

    def keys_shared(self, spec: RedisList) -> bool:
        return True  # on the queue's own server


KIND = RedisListKind()
