"""Depth of a Redis list pool: every job not yet done, as the worker runtime keeps them (see
`workerfleet.worker.redis_list`): waiting in the list and in its priority levels' lists, in flight in
the processing lists of the pool's workers, and retries waiting for their backoff in each level's
`:delayed` (due or not: only a running worker moves them back onto the list, so a pool must not sleep
at zero while any wait there). Oldest age: the oldest of the envelopes at the levels' tails (each the
next of its level to be taken), so deadline-based scaling answers to the most urgent level."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis import exceptions as redis_errors

from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import RedisList
from workerfleet.backends.base import QueueSample, envelope_age_seconds
from workerfleet.backends.redis_common import MALFORMED_ANSWER, connect, release, unreadable
from workerfleet.planners.priority import LEVELS, level_queue


class RedisListDepth:
    def __init__(self, queue: RedisList, credentials: Credentials) -> None:
        self._key = queue.list_key
        self._redis = connect(queue.address, queue.database, credentials, tls=queue.tls)

    async def read(self) -> QueueSample:
        try:
            async with self._redis.pipeline(transaction=False) as pipeline:
                for level in LEVELS:
                    key = level_queue(self._key, level)
                    pipeline.llen(key)
                    pipeline.lindex(key, -1)
                    pipeline.zcard(f"{key}:delayed")
                pipeline.smembers(f"{self._key}:workers")
                *per_level, workers = await pipeline.execute()
            waiting = sum(int(length) for length in per_level[0::3])
            delayed = sum(int(count) for count in per_level[2::3])
            now = datetime.now(UTC)
            ages = [age for tail in per_level[1::3] if (age := envelope_age_seconds(tail, now)) is not None]
            in_flight = 0
            if workers:
                async with self._redis.pipeline(transaction=False) as pipeline:
                    for worker in workers:
                        name = worker.decode(errors="replace") if isinstance(worker, bytes) else str(worker)
                        pipeline.llen(f"{self._key}:processing:{name}")
                    lengths: list[Any] = await pipeline.execute()
                in_flight = sum(int(length) for length in lengths)
            depth = waiting + in_flight + delayed
        except (redis_errors.RedisError, OSError, *MALFORMED_ANSWER) as error:
            raise unreadable(f"redis list {self._key!r}", error) from error
        return QueueSample(depth=depth, oldest_age_seconds=max(ages, default=None))

    async def close(self) -> None:
        await release(self._redis)
