"""Redis stream backend: a consumer group hands each entry to one worker, which acknowledges it when done.

Keys, for a pool whose stream is S and group G:
    S               entries with one field, `job`, holding the envelope; producers XADD
    S:delayed       retries waiting for their backoff, scored by due time (ms since the epoch)
    S:done:<type>:<key>  idempotency keys of completed jobs, with the JobType's TTL
    S:claim:<type>:<key> the worker running a keyed job, until its lease ends (see the runtime)
Dead-letter and review queues are streams on the same server (XADD, field `job`).

An entry stays in the group's pending list until acknowledged. A live worker settles every entry within
its job type's timeout, so an entry pending for longer than its own job type's timeout (plus the
runtime's cancel grace and the heartbeat interval) belongs to a vanished worker: the consume loop
lists entries idle past the shortest such limit (XPENDING IDLE), reads their job types, and claims those
past their own type's limit (XCLAIM with that min-idle-time, so two workers cannot both take one).
Entries of unknown types, or not envelopes (their type is read within the worker's bounds, as the runtime
reads it: never a parse that can fail), wait for the longest limit. A process that starts re-reads
the entries still pending under its own consumer name first (XREADGROUP from id 0): a restarted
container keeps its worker id, and what its earlier process held would otherwise wait for the reclaim.
A reconnect does not: those entries are running here. The group's delivery count per entry (XPENDING)
says how often an entry was handed out, for the runtime's crash count; an entry given back (release,
or a keyed copy deferred while another copy runs) is a new entry, whose count starts again. The group is
created when missing (with the stream, MKSTREAM) at the start of the stream, id 0, so entries added
before the first worker started are delivered too. Acknowledged entries stay in the stream; producers
bound it (XADD MAXLEN/MINID).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import RedisStream
from workerfleet.worker.backend import CompletedKey, Delivery
from workerfleet.worker.envelope import DEFAULT_LIMITS, MessageLimits, peek_job_type
from workerfleet.worker.redis_support import (
    COMPLETE_STREAM,
    PROMOTE_BATCH,
    PROMOTE_TO_STREAM,
    SETTLE_STREAM,
    Completion,
    CompletionBatcher,
    RedisQueueKeys,
    now_ms,
    redis_client,
    refused_on_response_errors,
    unavailable_on_connection_errors,
)

JOB_FIELD = b"job"
START_OF_PENDING = "-"
START_OF_HISTORY = "0"


def _deliveries(
    entries: Sequence[tuple[bytes, dict[bytes, bytes] | None]], counts: Mapping[bytes, int] | None = None
) -> list[Delivery]:
    # An entry without the job field (or deleted meanwhile) becomes an empty body: the runtime
    # dead-letters it as a malformed envelope.
    return [
        Delivery(
            body=(fields or {}).get(JOB_FIELD, b""),
            handle=entry_id,
            deliveries=(counts or {}).get(entry_id, 1),
        )
        for entry_id, fields in entries
        if entry_id is not None
    ]


def _entry_id(delivery: Delivery) -> bytes:
    assert isinstance(delivery.handle, bytes)
    return delivery.handle


class RedisStreamBackend(RedisQueueKeys):
    ADD_TO_QUEUE = "xadd"

    def __init__(
        self,
        queue: RedisStream,
        credentials: Credentials,
        worker_id: str,
        *,
        reclaim_idle_seconds: float,
        reclaim_interval_seconds: float,
        reclaim_idle_seconds_by_type: Mapping[str, float] | None = None,
        limits: MessageLimits = DEFAULT_LIMITS,
    ) -> None:
        """`reclaim_idle_seconds_by_type`: how long an entry of each job type may stay pending before it
        counts as a vanished worker's; `reclaim_idle_seconds` for any other (the longest of them).
        `limits`: the bounds within which a pending entry's job type is read (as the runtime reads it)."""
        self._limits = limits
        self._key = queue.stream
        self._group = queue.consumer_group
        self._consumer = worker_id
        self._reclaim_idle_ms = int(reclaim_idle_seconds * 1000)
        self._reclaim_idle_ms_by_type = {
            job_type: int(seconds * 1000)
            for job_type, seconds in (reclaim_idle_seconds_by_type or {}).items()
        }
        self._history_cursor: str | None = None
        self._started = False
        self._reclaim_interval = reclaim_interval_seconds
        self._next_reclaim = 0.0
        self._reclaim_cursor = START_OF_PENDING
        self._redis: Redis = redis_client(queue.address, queue.database, credentials, queue.tls)
        self._promote = self._redis.register_script(PROMOTE_TO_STREAM)
        self._settle = self._redis.register_script(SETTLE_STREAM)
        self._completions = CompletionBatcher(
            self._redis.register_script(COMPLETE_STREAM),
            (self._key, self._key),
            self._group,
            self._completed_key_names,
        )
        self._register_claim_scripts()

    async def connect(self) -> None:
        with unavailable_on_connection_errors():
            try:
                await self._redis.xgroup_create(self._key, self._group, id="0", mkstream=True)
            except redis_errors.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        if not self._started:
            # At the start only: what is pending under our name was held by an earlier process.
            self._history_cursor = START_OF_HISTORY
            self._started = True

    async def close(self) -> None:
        self._completions.cancel()
        with unavailable_on_connection_errors():
            try:
                pending: list[Any] = await self._redis.xpending_range(
                    self._key, self._group, min="-", max="+", count=1, consumername=self._consumer
                )
                if not pending:  # a consumer with pending entries keeps them claimable; never drop those
                    await self._redis.xgroup_delconsumer(self._key, self._group, self._consumer)
            finally:
                await self._redis.aclose()

    async def _delivery_counts(self, entry_ids: Sequence[bytes], consumer: str | None) -> dict[bytes, int]:
        if not entry_ids:
            return {}
        pending: list[Any] = await self._redis.xpending_range(
            self._key,
            self._group,
            min=entry_ids[0],
            max=entry_ids[-1],
            count=len(entry_ids),
            consumername=consumer,
        )
        return {entry["message_id"]: int(entry["times_delivered"]) for entry in pending}

    async def _own_history(self, max_count: int) -> list[Delivery]:
        """Entries still pending under our consumer name from an earlier process, oldest first."""
        assert self._history_cursor is not None
        reply: Any = await self._redis.xreadgroup(
            self._group, self._consumer, {self._key: self._history_cursor}, count=max_count
        )
        entries = [entry for _stream, found in reply or [] for entry in found]
        if not entries:
            self._history_cursor = None
            return []
        last = entries[-1][0]
        self._history_cursor = last.decode() if isinstance(last, bytes) else str(last)
        counts = await self._delivery_counts([entry_id for entry_id, _fields in entries], self._consumer)
        return _deliveries(entries, counts)

    def _limit_ms(self, body: bytes | None) -> int:
        job_type = peek_job_type(body, self._limits) if body else None
        if job_type is None:
            return self._reclaim_idle_ms
        return self._reclaim_idle_ms_by_type.get(job_type, self._reclaim_idle_ms)

    async def _reclaim(self, max_count: int) -> list[Delivery]:
        """Entries pending past their job type's limit: their worker vanished, so take them over."""
        shortest = min([self._reclaim_idle_ms, *self._reclaim_idle_ms_by_type.values()])
        pending: list[Any] = await self._redis.xpending_range(
            self._key, self._group, min=self._reclaim_cursor, max="+", count=max_count, idle=shortest
        )
        if len(pending) < max_count:  # went round the whole pending list: rest until the next interval
            self._reclaim_cursor = START_OF_PENDING
            self._next_reclaim = time.monotonic() + self._reclaim_interval
        else:
            last = pending[-1]["message_id"]
            self._reclaim_cursor = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        if not pending:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in pending:
                pipe.xrange(self._key, min=entry["message_id"], max=entry["message_id"], count=1)
            found: list[Any] = await pipe.execute()
        by_limit: dict[int, list[Any]] = {}
        counts: dict[bytes, int] = {}
        for entry, matches in zip(pending, found, strict=True):
            body = (matches[0][1] or {}).get(JOB_FIELD) if matches else None
            limit = self._limit_ms(body)
            if int(entry["time_since_delivered"]) >= limit:
                by_limit.setdefault(limit, []).append(entry["message_id"])
                counts[entry["message_id"]] = int(entry["times_delivered"]) + 1  # XCLAIM counts one more
        claimed: list[Any] = []
        for limit, entry_ids in by_limit.items():
            # XCLAIM checks the idle time again: of two workers claiming at once, only one gets it. An
            # entry deleted from the stream meanwhile is dropped from the pending list, not returned.
            claimed.extend(
                await self._redis.xclaim(
                    self._key,
                    self._group,
                    self._consumer,
                    min_idle_time=limit,
                    message_ids=tuple(entry_ids),
                )
            )
        return _deliveries(claimed, counts)

    async def receive(self, max_count: int, wait_seconds: float) -> Sequence[Delivery]:
        with unavailable_on_connection_errors():
            if self._history_cursor is not None:
                history = await self._own_history(max_count)
                if history:
                    return history
            if time.monotonic() >= self._next_reclaim:
                reclaimed = await self._reclaim(max_count)
                if reclaimed:
                    return reclaimed
            reply: Any = await self._redis.xreadgroup(
                self._group,
                self._consumer,
                {self._key: ">"},
                count=max_count,
                block=max(int(wait_seconds * 1000), 1),
            )
        return [delivery for _stream, entries in reply or [] for delivery in _deliveries(entries)]

    async def stop_receiving(self) -> None:
        """Nothing to do: jobs are taken only by receive, and none wait in this process unhanded."""

    async def complete(self, delivery: Delivery, completed_key: CompletedKey | None) -> None:
        await self._completions.complete(Completion(_entry_id(delivery), False, completed_key))

    async def _settle_to(
        self, delivery: Delivery, destination: str | None, body: bytes, how: str, due: int = 0
    ) -> None:
        """Write `body` to `destination`, then acknowledge the entry; nothing changes if the write fails."""
        keys = [self._key, destination or self._key]
        with unavailable_on_connection_errors(), refused_on_response_errors(destination or self._key):
            await self._settle(keys=keys, args=[self._group, _entry_id(delivery), body, how, due])

    async def release(self, delivery: Delivery) -> None:
        # A stream entry cannot go back to unread; a copy at the end, added as the original is
        # acknowledged, is free for any worker at once.
        await self._settle_to(delivery, self._key, delivery.body, "xadd")

    async def maintain(self) -> None:
        with unavailable_on_connection_errors():
            await self._promote(keys=[self._delayed, self._key], args=[now_ms(), PROMOTE_BATCH])

    async def enqueue(self, body: bytes) -> None:
        with unavailable_on_connection_errors():
            await self._redis.xadd(self._key, {JOB_FIELD: body})
