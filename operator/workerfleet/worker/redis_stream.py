"""Redis stream backend: a consumer group hands each entry to one worker, which acknowledges it when done.

Keys, for a pool whose stream is S and group G:
    S               entries with one field, `job`, holding the envelope; producers XADD
    S:priority:high|low  entries of JobTypes of priority high or low (S holds normal ones), each
                    with the group, its own pending list and `:delayed`; read by the turns of
                    `workerfleet.planners.priority`
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

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import Priority
from workerfleet.api.workerpool import RedisStream
from workerfleet.planners.priority import level_queue, levels_served, turns
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
LEVEL_POLL_SECONDS = 0.1
"""How often a worker serving several priority levels reads again while all their streams are empty."""
START_OF_PENDING = "-"
START_OF_HISTORY = "0"


@dataclass(frozen=True)
class StreamEntry:
    """A delivery's handle: the entry and the stream (the pool's, or a priority level's) it is in."""

    stream: str
    entry_id: bytes


def _deliveries(
    stream: str,
    entries: Sequence[tuple[bytes, dict[bytes, bytes] | None]],
    counts: Mapping[bytes, int] | None = None,
) -> list[Delivery]:
    # An entry without the job field (or deleted meanwhile) becomes an empty body: the runtime
    # dead-letters it as a malformed envelope.
    return [
        Delivery(
            body=(fields or {}).get(JOB_FIELD, b""),
            handle=StreamEntry(stream, entry_id),
            deliveries=(counts or {}).get(entry_id, 1),
        )
        for entry_id, fields in entries
        if entry_id is not None
    ]


def _entry(delivery: Delivery) -> StreamEntry:
    assert isinstance(delivery.handle, StreamEntry)
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
        levels: Mapping[str, Priority] | None = None,
    ) -> None:
        """`reclaim_idle_seconds_by_type`: how long an entry of each job type may stay pending before it
        counts as a vanished worker's; `reclaim_idle_seconds` for any other (the longest of them).
        `limits`: the bounds within which a pending entry's job type is read (as the runtime reads it).
        `levels`: the priority of each JobType served (absent: normal)."""
        self._limits = limits
        self._key = queue.stream
        self._levels = {name: level for name, level in (levels or {}).items() if level != Priority.NORMAL}
        self._served = levels_served((levels or {}).values())
        self._streams = [level_queue(self._key, level) for level in self._served]
        self._turn = 0
        self._group = queue.consumer_group
        self._consumer = worker_id
        self._reclaim_idle_ms = int(reclaim_idle_seconds * 1000)
        self._reclaim_idle_ms_by_type = {
            job_type: int(seconds * 1000)
            for job_type, seconds in (reclaim_idle_seconds_by_type or {}).items()
        }
        self._history_cursors: dict[str, str] = {}
        self._started = False
        self._reclaim_interval = reclaim_interval_seconds
        self._next_reclaim = dict.fromkeys(self._streams, 0.0)
        self._reclaim_cursors = dict.fromkeys(self._streams, START_OF_PENDING)
        self._redis: Redis = redis_client(queue.address, queue.database, credentials, queue.tls)
        self._promote = self._redis.register_script(PROMOTE_TO_STREAM)
        self._settle = self._redis.register_script(SETTLE_STREAM)
        complete = self._redis.register_script(COMPLETE_STREAM)
        # One batch per stream: a batch's script acknowledges its entries on the one stream it is given.
        self._completions = {
            stream: CompletionBatcher(complete, (stream, stream), self._group, self._completed_key_names)
            for stream in self._streams
        }
        self._register_claim_scripts()

    async def connect(self) -> None:
        with unavailable_on_connection_errors():
            for stream in self._streams:
                try:
                    await self._redis.xgroup_create(stream, self._group, id="0", mkstream=True)
                except redis_errors.ResponseError as error:
                    if "BUSYGROUP" not in str(error):
                        raise
        if not self._started:
            # At the start only: what is pending under our name was held by an earlier process.
            self._history_cursors = dict.fromkeys(self._streams, START_OF_HISTORY)
            self._started = True

    async def close(self) -> None:
        for completions in self._completions.values():
            completions.cancel()
        with unavailable_on_connection_errors():
            try:
                for stream in self._streams:
                    pending: list[Any] = await self._redis.xpending_range(
                        stream, self._group, min="-", max="+", count=1, consumername=self._consumer
                    )
                    if not pending:  # a consumer with pending entries keeps them claimable; never drop those
                        await self._redis.xgroup_delconsumer(stream, self._group, self._consumer)
            finally:
                await self._redis.aclose()

    async def _delivery_counts(
        self, stream: str, entry_ids: Sequence[bytes], consumer: str | None
    ) -> dict[bytes, int]:
        if not entry_ids:
            return {}
        pending: list[Any] = await self._redis.xpending_range(
            stream,
            self._group,
            min=entry_ids[0],
            max=entry_ids[-1],
            count=len(entry_ids),
            consumername=consumer,
        )
        return {entry["message_id"]: int(entry["times_delivered"]) for entry in pending}

    async def _own_history(self, max_count: int) -> list[Delivery]:
        """Entries still pending under our consumer name from an earlier process, oldest first, one
        level's stream after another."""
        for stream, cursor in list(self._history_cursors.items()):
            reply: Any = await self._redis.xreadgroup(
                self._group, self._consumer, {stream: cursor}, count=max_count
            )
            entries = [entry for _stream, found in reply or [] for entry in found]
            if not entries:
                del self._history_cursors[stream]
                continue
            last = entries[-1][0]
            self._history_cursors[stream] = last.decode() if isinstance(last, bytes) else str(last)
            entry_ids = [entry_id for entry_id, _fields in entries]
            return _deliveries(
                stream, entries, await self._delivery_counts(stream, entry_ids, self._consumer)
            )
        return []

    def _limit_ms(self, body: bytes | None) -> int:
        job_type = peek_job_type(body, self._limits) if body else None
        if job_type is None:
            return self._reclaim_idle_ms
        return self._reclaim_idle_ms_by_type.get(job_type, self._reclaim_idle_ms)

    async def _reclaim(self, max_count: int) -> list[Delivery]:
        """Entries pending past their job type's limit, on any level's stream due for a look: their
        worker vanished, so take them over."""
        for stream in self._streams:
            if time.monotonic() >= self._next_reclaim[stream]:
                reclaimed = await self._reclaim_from(stream, max_count)
                if reclaimed:
                    return reclaimed
        return []

    async def _reclaim_from(self, stream: str, max_count: int) -> list[Delivery]:
        shortest = min([self._reclaim_idle_ms, *self._reclaim_idle_ms_by_type.values()])
        pending: list[Any] = await self._redis.xpending_range(
            stream, self._group, min=self._reclaim_cursors[stream], max="+", count=max_count, idle=shortest
        )
        if len(pending) < max_count:  # went round the whole pending list: rest until the next interval
            self._reclaim_cursors[stream] = START_OF_PENDING
            self._next_reclaim[stream] = time.monotonic() + self._reclaim_interval
        else:
            last = pending[-1]["message_id"]
            self._reclaim_cursors[stream] = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        if not pending:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in pending:
                pipe.xrange(stream, min=entry["message_id"], max=entry["message_id"], count=1)
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
                    stream,
                    self._group,
                    self._consumer,
                    min_idle_time=limit,
                    message_ids=tuple(entry_ids),
                )
            )
        return _deliveries(stream, claimed, counts)

    async def _take_by_turns(self, count: int) -> list[Delivery]:
        """New entries from the levels' streams, as many of each as its turns of the next `count`; the
        turns a level has no entry for go to the highest levels that have."""
        wanted = Counter(turns(self._served, self._turn, count))
        taken: list[Delivery] = []
        for fill in (False, True):
            for level, stream in zip(self._served, self._streams, strict=True):
                asked = count - len(taken) if fill else wanted[level]
                if asked <= 0:
                    continue
                reply: Any = await self._redis.xreadgroup(
                    self._group, self._consumer, {stream: ">"}, count=asked
                )
                taken.extend(
                    delivery for _s, entries in reply or [] for delivery in _deliveries(stream, entries)
                )
        self._turn += len(taken)
        return taken

    async def receive(self, max_count: int, wait_seconds: float) -> Sequence[Delivery]:
        """Own entries of an earlier process first, then a vanished worker's, then new ones: by the turns
        of their priority levels, polling every LEVEL_POLL_SECONDS while all the levels' streams are
        empty (one level: a blocking read)."""
        with unavailable_on_connection_errors():
            if self._history_cursors:
                history = await self._own_history(max_count)
                if history:
                    return history
            reclaimed = await self._reclaim(max_count)
            if reclaimed:
                return reclaimed
            if len(self._streams) > 1:
                deadline = time.monotonic() + wait_seconds
                taken = await self._take_by_turns(max_count)
                while not taken and time.monotonic() < deadline:
                    await asyncio.sleep(LEVEL_POLL_SECONDS)
                    taken = await self._take_by_turns(max_count)
                return taken
            [stream] = self._streams
            reply: Any = await self._redis.xreadgroup(
                self._group,
                self._consumer,
                {stream: ">"},
                count=max_count,
                block=max(int(wait_seconds * 1000), 1),
            )
        return [delivery for _stream, entries in reply or [] for delivery in _deliveries(stream, entries)]

    async def stop_receiving(self) -> None:
        """Nothing to do: jobs are taken only by receive, and none wait in this process unhanded."""

    async def complete(self, delivery: Delivery, completed_key: CompletedKey | None) -> None:
        entry = _entry(delivery)
        await self._completions[entry.stream].complete(Completion(entry.entry_id, False, completed_key))

    async def _settle_to(
        self, delivery: Delivery, destination: str | None, body: bytes, how: str, due: int = 0
    ) -> None:
        """Write `body` to `destination`, then acknowledge the entry; nothing changes if the write fails."""
        entry = _entry(delivery)
        keys = [entry.stream, destination or entry.stream]
        with unavailable_on_connection_errors(), refused_on_response_errors(destination or entry.stream):
            await self._settle(keys=keys, args=[self._group, entry.entry_id, body, how, due])

    async def release(self, delivery: Delivery) -> None:
        # A stream entry cannot go back to unread; a copy at the end, added as the original is
        # acknowledged, is free for any worker at once.
        await self._settle_to(delivery, _entry(delivery).stream, delivery.body, "xadd")

    async def maintain(self) -> None:
        with unavailable_on_connection_errors():
            for stream in self._streams:
                await self._promote(keys=[f"{stream}:delayed", stream], args=[now_ms(), PROMOTE_BATCH])

    async def enqueue(self, body: bytes) -> None:
        with unavailable_on_connection_errors():
            await self._redis.xadd(self._queue_of(body), {JOB_FIELD: body})
