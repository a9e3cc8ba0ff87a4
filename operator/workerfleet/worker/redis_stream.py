"""Redis stream backend: a consumer group hands each entry to one worker, which acknowledges it when done.

Keys, for a pool whose stream is S and group G:
    S               entries with one field, `job`, holding the envelope; producers XADD
    S:delayed       retries waiting for their backoff, scored by due time (ms since the epoch)
    S:done:<type>:<key>  idempotency keys of completed jobs, with the JobType's TTL
Dead-letter and review queues are streams on the same server (XADD, field `job`).

An entry stays in the group's pending list until acknowledged. A live worker settles every entry within
its job type's timeout, so an entry pending for longer than the longest timeout plus the heartbeat
interval belongs to a vanished worker: upkeep reclaims it (XAUTOCLAIM) and runs it here. The group is
created when missing (with the stream, MKSTREAM) at the start of the stream, id 0, so entries added
before the first worker started are delivered too. Acknowledged entries stay in the stream; producers
bound it (XADD MAXLEN/MINID).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from workerfleet.api.workerpool import RedisStream
from workerfleet.worker.backend import CompletedKey, Delivery
from workerfleet.worker.redis_support import (
    PROMOTE_BATCH,
    PROMOTE_TO_STREAM,
    SETTLE_STREAM,
    due_ms,
    now_ms,
    redis_client,
    refused_on_response_errors,
    unavailable_on_connection_errors,
)
from workerfleet.worker.settings import Credentials

JOB_FIELD = b"job"
START_OF_PENDING = "0-0"


def _deliveries(entries: Sequence[tuple[bytes, dict[bytes, bytes] | None]]) -> list[Delivery]:
    # An entry without the job field (or deleted meanwhile) becomes an empty body: the runtime
    # dead-letters it as a malformed envelope.
    return [
        Delivery(body=(fields or {}).get(JOB_FIELD, b""), handle=entry_id)
        for entry_id, fields in entries
        if entry_id is not None
    ]


def _entry_id(delivery: Delivery) -> bytes:
    assert isinstance(delivery.handle, bytes)
    return delivery.handle


class RedisStreamBackend:
    def __init__(
        self,
        queue: RedisStream,
        credentials: Credentials,
        worker_id: str,
        *,
        reclaim_idle_seconds: float,
        reclaim_interval_seconds: float,
    ) -> None:
        self._stream = queue.stream
        self._group = queue.consumer_group
        self._consumer = worker_id
        self._reclaim_idle_ms = int(reclaim_idle_seconds * 1000)
        self._reclaim_interval = reclaim_interval_seconds
        self._next_reclaim = 0.0
        self._reclaim_cursor = START_OF_PENDING
        self._redis: Redis = redis_client(queue.address, queue.database, credentials)
        self._promote = self._redis.register_script(PROMOTE_TO_STREAM)
        self._settle = self._redis.register_script(SETTLE_STREAM)

    @property
    def _delayed(self) -> str:
        return f"{self._stream}:delayed"

    def _done(self, key: str) -> str:
        return f"{self._stream}:done:{key}"

    async def connect(self) -> None:
        with unavailable_on_connection_errors():
            try:
                await self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
            except redis_errors.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    async def close(self) -> None:
        with unavailable_on_connection_errors():
            try:
                pending: list[Any] = await self._redis.xpending_range(
                    self._stream, self._group, min="-", max="+", count=1, consumername=self._consumer
                )
                if not pending:  # a consumer with pending entries keeps them claimable; never drop those
                    await self._redis.xgroup_delconsumer(self._stream, self._group, self._consumer)
            finally:
                await self._redis.aclose()

    async def _reclaim(self, max_count: int) -> list[Delivery]:
        """Entries idle past the limit: their worker vanished, so take them over."""
        reply: list[Any] = await self._redis.xautoclaim(
            self._stream,
            self._group,
            self._consumer,
            min_idle_time=self._reclaim_idle_ms,
            start_id=self._reclaim_cursor,
            count=max_count,
        )
        cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        self._reclaim_cursor = cursor
        if cursor == START_OF_PENDING:  # went round the whole pending list: rest until the next interval
            self._next_reclaim = time.monotonic() + self._reclaim_interval
        return _deliveries(reply[1])

    async def receive(self, max_count: int, wait_seconds: float) -> Sequence[Delivery]:
        with unavailable_on_connection_errors():
            if time.monotonic() >= self._next_reclaim:
                reclaimed = await self._reclaim(max_count)
                if reclaimed:
                    return reclaimed
            reply: Any = await self._redis.xreadgroup(
                self._group,
                self._consumer,
                {self._stream: ">"},
                count=max_count,
                block=max(int(wait_seconds * 1000), 1),
            )
        return [delivery for _stream, entries in reply or [] for delivery in _deliveries(entries)]

    async def complete(self, delivery: Delivery, completed_key: CompletedKey | None) -> None:
        with unavailable_on_connection_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self._stream, self._group, _entry_id(delivery))
                if completed_key is not None:
                    pipe.set(self._done(completed_key.key), b"1", ex=completed_key.ttl_seconds)
                await pipe.execute()

    async def _settle_to(
        self, delivery: Delivery, destination: str | None, body: bytes, how: str, due: int = 0
    ) -> None:
        """Write `body` to `destination`, then acknowledge the entry; nothing changes if the write fails."""
        keys = [self._stream, destination or self._stream]
        with unavailable_on_connection_errors(), refused_on_response_errors(destination or self._stream):
            await self._settle(keys=keys, args=[self._group, _entry_id(delivery), body, how, due])

    async def retry(self, delivery: Delivery, body: bytes, delay_seconds: float) -> None:
        await self._settle_to(delivery, self._delayed, body, "zadd", due_ms(delay_seconds))

    async def move(self, delivery: Delivery, queue: str | None, body: bytes) -> None:
        await self._settle_to(delivery, queue, body, "xadd" if queue is not None else "none")

    async def release(self, delivery: Delivery) -> None:
        # A stream entry cannot go back to unread; a copy at the end, added as the original is
        # acknowledged, is free for any worker at once.
        await self._settle_to(delivery, self._stream, delivery.body, "xadd")

    async def is_completed(self, key: str) -> bool:
        with unavailable_on_connection_errors():
            return bool(await self._redis.exists(self._done(key)))

    async def maintain(self) -> None:
        with unavailable_on_connection_errors():
            await self._promote(keys=[self._delayed, self._stream], args=[now_ms(), PROMOTE_BATCH])

    async def enqueue(self, body: bytes) -> None:
        with unavailable_on_connection_errors():
            await self._redis.xadd(self._stream, {JOB_FIELD: body})
