"""What the Redis list and Redis stream kinds share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workerfleet.api.common import SecretKeySelector

if TYPE_CHECKING:
    from workerfleet.api.workerpool import RedisList, RedisStream


def keda_basics(redis: RedisList | RedisStream) -> tuple[dict[str, str], list[tuple[str, SecretKeySelector]]]:
    """Metadata and TriggerAuthentication secrets of KEDA's redis scalers, but the queue's own."""
    metadata = {"address": redis.address, "databaseIndex": str(redis.database)}
    secrets: list[tuple[str, SecretKeySelector]] = []
    if redis.tls is not None:
        metadata["enableTLS"] = "true"
        if redis.tls.ca_secret_ref is not None:  # KEDA's redis scalers read `ca` from the authentication
            secrets.append(("ca", redis.tls.ca_secret_ref))
    if redis.auth is not None:
        secrets.append(("password", redis.auth.password_secret_ref))
        if redis.auth.username_secret_ref is not None:
            secrets.append(("username", redis.auth.username_secret_ref))
    return metadata, secrets
