"""Depth of a Redis list: its length; oldest age from the envelope at its tail (the next to be taken)."""

from __future__ import annotations

from datetime import UTC, datetime

from redis import exceptions as redis_errors

from workerfleet.api.workerpool import RedisList
from workerfleet.backends.base import Credentials, QueueSample, QueueUnreachableError, envelope_age_seconds
from workerfleet.backends.redis_common import connect, release


class RedisListDepth:
    def __init__(self, queue: RedisList, credentials: Credentials) -> None:
        self._key = queue.list_key
        self._redis = connect(queue.address, queue.database, credentials, tls=queue.tls is not None)

    async def read(self) -> QueueSample:
        try:
            async with self._redis.pipeline(transaction=False) as pipeline:
                pipeline.llen(self._key)
                pipeline.lindex(self._key, -1)
                depth, oldest = await pipeline.execute()
        except (redis_errors.RedisError, OSError) as error:
            raise QueueUnreachableError(
                f"redis list {self._key!r}: {type(error).__name__}: {error}"
            ) from error
        return QueueSample(
            depth=int(depth), oldest_age_seconds=envelope_age_seconds(oldest, datetime.now(UTC))
        )

    async def close(self) -> None:
        await release(self._redis)
