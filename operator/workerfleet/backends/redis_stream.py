"""Depth of a Redis stream consumer group: entries not yet delivered (lag) plus delivered but unacked.

The oldest age comes from entry IDs, whose first part is the time the entry was added.
"""

from __future__ import annotations

import time
from typing import Any

from redis import exceptions as redis_errors

from workerfleet.api.workerpool import RedisStream
from workerfleet.backends.base import Credentials, QueueSample, QueueUnreachableError
from workerfleet.backends.redis_common import connect, release


def entry_age_seconds(entry_id: bytes | str | None, now_ms: int) -> float | None:
    if entry_id is None:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds = text.partition("-")[0]
    return max(0.0, (now_ms - int(milliseconds)) / 1000) if milliseconds.isdigit() else None


def _field(group: dict[Any, Any], name: str) -> Any:
    return group.get(name, group.get(name.encode()))


class RedisStreamDepth:
    def __init__(self, queue: RedisStream, credentials: Credentials) -> None:
        self._stream = queue.stream
        self._group = queue.consumer_group
        self._redis = connect(queue.address, queue.database, credentials, tls=queue.tls is not None)

    async def read(self) -> QueueSample:
        try:
            return await self._read()
        except redis_errors.ResponseError as error:
            if "no such key" in str(error).lower():
                return QueueSample(depth=0)
            raise QueueUnreachableError(f"redis stream {self._stream!r}: {error}") from error
        except (redis_errors.RedisError, OSError) as error:
            raise QueueUnreachableError(
                f"redis stream {self._stream!r}: {type(error).__name__}: {error}"
            ) from error

    async def _read(self) -> QueueSample:
        now_ms = int(time.time() * 1000)
        groups = await self._redis.xinfo_groups(self._stream)
        group = next((g for g in groups if _field(g, "name") in (self._group, self._group.encode())), None)
        if group is None:
            # No worker has created the group yet: every entry is waiting.
            depth = await self._redis.xlen(self._stream)
            first = await self._redis.xrange(self._stream, count=1)
            return QueueSample(
                depth=int(depth),
                oldest_age_seconds=entry_age_seconds(first[0][0] if first else None, now_ms),
            )
        pending = int(_field(group, "pending") or 0)
        lag = _field(group, "lag")
        if lag is None:  # Redis cannot tell after some deletions: the stream's length bounds it
            lag = int(await self._redis.xlen(self._stream)) - pending
        if pending:
            summary = await self._redis.xpending(self._stream, self._group)
            oldest = summary.get("min")
        else:
            last = _field(group, "last-delivered-id")
            last_id = last.decode() if isinstance(last, bytes) else str(last)
            following = await self._redis.xrange(self._stream, min=f"({last_id}", count=1)
            oldest = following[0][0] if following else None
        return QueueSample(depth=int(lag) + pending, oldest_age_seconds=entry_age_seconds(oldest, now_ms))

    async def close(self) -> None:
        await release(self._redis)
