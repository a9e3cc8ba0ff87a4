"""Depth of a Redis stream consumer group: every job not yet done. That is the entries not yet delivered
(the group's lag), those delivered but not acknowledged (pending: in flight, or held by a vanished
worker until reclaimed) and retries waiting for their backoff in `<stream>:delayed` (due or not: only a
running worker moves them back onto the stream, so a pool must not sleep at zero while any wait there),
summed over the priority levels' streams (`<stream>:priority:high|low` beside the pool's), whose
oldest entry gives the age, so deadline-based scaling answers to the most urgent level.

Acknowledged entries stay in the stream, so its length says nothing about the work left. The lag comes
from XINFO GROUPS; where Redis cannot tell it (before 7.0, or nil after an XDEL of an entry the group
has not read) the entries after the group's last-delivered-id are counted with XRANGE, up to
UNDELIVERED_COUNT_LIMIT; past that, the estimate XLEN - entries-read (clamped at zero) if it is larger.

The oldest age comes from entry IDs, whose first part is the time the entry was added.
"""

from __future__ import annotations

import re
import time
from typing import Any

from redis import exceptions as redis_errors

from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import RedisStream
from workerfleet.backends.base import QueueSample
from workerfleet.backends.redis_common import MALFORMED_ANSWER, connect, release, unreadable
from workerfleet.planners.priority import LEVELS, level_queue


def entry_age_seconds(entry_id: bytes | str | None, now_ms: int) -> float | None:
    """Age of a stream entry from its ID (`<milliseconds>-<sequence>`); None when it is not one."""
    if entry_id is None:
        return None
    text = entry_id.decode(errors="replace") if isinstance(entry_id, bytes) else entry_id
    milliseconds = _ENTRY_ID.match(text)
    return max(0.0, (now_ms - int(milliseconds[1])) / 1000) if milliseconds else None


_ENTRY_ID = re.compile(r"([0-9]{1,20})-[0-9]{1,20}\Z")
"""Both parts of an ID are 64-bit numbers."""


UNDELIVERED_COUNT_LIMIT = 10_000
"""At most this many entries are read to count the undelivered ones when Redis does not report lag."""


def _field(group: dict[Any, Any], name: str) -> Any:
    return group.get(name, group.get(name.encode()))


class RedisStreamDepth:
    def __init__(self, queue: RedisStream, credentials: Credentials) -> None:
        self._stream = queue.stream
        self._group = queue.consumer_group
        self._redis = connect(queue.address, queue.database, credentials, tls=queue.tls)

    async def read(self) -> QueueSample:
        """The sum over the priority levels' streams; the oldest age of any of them."""
        samples = [await self._read_level(level_queue(self._stream, level)) for level in LEVELS]
        ages = [sample.oldest_age_seconds for sample in samples if sample.oldest_age_seconds is not None]
        return QueueSample(
            depth=sum(sample.depth for sample in samples), oldest_age_seconds=max(ages, default=None)
        )

    async def _read_level(self, stream: str) -> QueueSample:
        try:
            try:
                return await self._read(stream)
            except redis_errors.ResponseError as error:
                if "no such key" not in str(error).lower():
                    raise
                return QueueSample(depth=await self._delayed(stream))  # no stream yet: only retries wait
        except (redis_errors.RedisError, OSError, *MALFORMED_ANSWER) as error:
            raise unreadable(f"redis stream {stream!r}", error) from error

    async def _delayed(self, stream: str) -> int:
        return int(await self._redis.zcard(f"{stream}:delayed"))

    async def _undelivered(self, stream: str, group: dict[Any, Any]) -> int:
        """Entries after the group's last-delivered-id, when XINFO has no lag to say it."""
        last = _field(group, "last-delivered-id")
        last_id = last.decode() if isinstance(last, bytes) else str(last)
        following = await self._redis.xrange(stream, min=f"({last_id}", count=UNDELIVERED_COUNT_LIMIT)
        counted = len(following or [])
        if counted < UNDELIVERED_COUNT_LIMIT:
            return counted
        entries_read = _field(group, "entries-read")
        length = int(await self._redis.xlen(stream))
        estimate = length - int(entries_read) if entries_read is not None else length
        return max(UNDELIVERED_COUNT_LIMIT, estimate)

    async def _read(self, stream: str) -> QueueSample:
        now_ms = int(time.time() * 1000)
        groups = await self._redis.xinfo_groups(stream)
        delayed = await self._delayed(stream)
        group = next((g for g in groups if _field(g, "name") in (self._group, self._group.encode())), None)
        if group is None:
            # No worker has created the group yet (it will, at the start of the stream): all is waiting.
            depth = await self._redis.xlen(stream)
            first = await self._redis.xrange(stream, count=1)
            return QueueSample(
                depth=int(depth) + delayed,
                oldest_age_seconds=entry_age_seconds(first[0][0] if first else None, now_ms),
            )
        pending = int(_field(group, "pending") or 0)
        lag = _field(group, "lag")
        undelivered = max(int(lag), 0) if lag is not None else await self._undelivered(stream, group)
        if pending:
            summary = await self._redis.xpending(stream, self._group)
            oldest = summary.get("min")
        else:
            last = _field(group, "last-delivered-id")
            last_id = last.decode() if isinstance(last, bytes) else str(last)
            following = await self._redis.xrange(stream, min=f"({last_id}", count=1)
            oldest = following[0][0] if following else None
        return QueueSample(
            depth=undelivered + pending + delayed, oldest_age_seconds=entry_age_seconds(oldest, now_ms)
        )

    async def close(self) -> None:
        await release(self._redis)
