"""Redis list backend, with the reliable-queue pattern: a job is never only in a worker's memory.

Keys, for a pool whose list is L:
    L                       waiting jobs; producers LPUSH, workers take from the right (FIFO)
    L:priority:high|low     waiting jobs of JobTypes of priority high or low (L holds normal ones),
                            each with its own `:delayed`; taken by the turns of
                            `workerfleet.planners.priority`
    L:processing:<worker>   jobs a worker holds, moved there atomically (a script of LMOVEs, or BLMOVE
                            when L is empty)
    L:worker:<worker>       the worker's heartbeat, expiring after the heartbeat interval
    L:workers               the workers that may hold jobs
    L:delayed               retries waiting for their backoff, scored by due time (ms since the epoch)
    L:crashes               per job (field: the job as queued), how often a worker died holding it
    L:done:<type>:<key>     idempotency keys of completed jobs, with the JobType's TTL
    L:claim:<type>:<key>    the worker running a keyed job, until its lease ends (see the runtime)
Dead-letter and review queues are lists on the same server (LPUSH).

A worker that vanishes (SIGKILL, OOM, lost node) stops renewing its heartbeat; the next worker whose
upkeep finds it expired moves its processing list back onto L (each job of a high or low JobType onto
its level's list), in one script, so the jobs run again.
A process recovers its own processing list only when it starts (a restarted container keeps its
worker id, and what the earlier process held is orphaned); reconnecting after a connection blip leaves
it alone, since the jobs in it are still running here.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import Priority
from workerfleet.api.workerpool import RedisList
from workerfleet.planners.priority import level_queue, levels_served, turns
from workerfleet.worker.backend import CompletedKey, Delivery
from workerfleet.worker.redis_support import (
    COMPLETE_LIST,
    PROMOTE_BATCH,
    PROMOTE_TO_LIST,
    SETTLE_LIST,
    Completion,
    CompletionBatcher,
    RedisQueueKeys,
    now_ms,
    redis_client,
    refused_on_response_errors,
    unavailable_on_connection_errors,
)

# KEYS: heartbeat, processing list, queue, workers set, crash counts, then where each job of ARGV[4..]
# goes. ARGV: worker id, "force" to skip the liveness check (a worker recovering its own list), "count"
# when the jobs' holder died (each moved job's crash count goes up), then jobs of a priority level's own
# list (each moved only if still held, so two workers recovering one list move it once). The rest go to
# the queue. Returns the number of jobs moved, or -1 for a live worker.
RECOVER = """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local moved = 0
for i = 4, #ARGV do
  if redis.call('LREM', KEYS[2], -1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[i + 2], ARGV[i])
    if ARGV[3] == 'count' then redis.call('HINCRBY', KEYS[5], ARGV[i], 1) end
    moved = moved + 1
  end
end
while true do
  local job = redis.call('LMOVE', KEYS[2], KEYS[3], 'RIGHT', 'RIGHT')
  if not job then break end
  if ARGV[3] == 'count' then redis.call('HINCRBY', KEYS[5], job, 1) end
  moved = moved + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
return moved
"""


RECEIVE_BATCH_MAX = 1_000
"""The most jobs one receive moves (Lua's stack bounds a script's HMGET arguments)."""

LEVEL_POLL_SECONDS = 0.1
"""How often a worker serving several priority levels asks again while all their queues are empty (a
blocking move watches one list only)."""

# Taking up to ARGV[1] jobs at once, in one round trip: each moved onto the processing list as BLMOVE
# would, then the crash counts of these and of the jobs in ARGV[3..] (already moved by a BLMOVE).
# KEYS: processing list, crash counts, then the queues of the priority levels served, highest first.
# ARGV[2]: each turn's level, a digit per turn (1: the first level's queue); a turn whose queue is empty
# takes from the highest level that has a job. Returns {jobs moved here, crash counts of ARGV[3..] and
# of the jobs moved here, in that order}.
TAKE_LIST = """
local moved = {}
for turn = 1, tonumber(ARGV[1]) do
  local own = tonumber(string.sub(ARGV[2], turn, turn))
  local job = redis.call('LMOVE', KEYS[2 + own], KEYS[1], 'RIGHT', 'LEFT')
  local level = 1
  while not job and level <= #KEYS - 2 do
    if level ~= own then job = redis.call('LMOVE', KEYS[2 + level], KEYS[1], 'RIGHT', 'LEFT') end
    level = level + 1
  end
  if not job then break end
  moved[#moved + 1] = job
end
local asked = {}
for i = 3, #ARGV do asked[#asked + 1] = ARGV[i] end
for _, job in ipairs(moved) do asked[#asked + 1] = job end
if #asked == 0 then return {moved, {}} end
return {moved, redis.call('HMGET', KEYS[2], unpack(asked))}
"""


class RedisListBackend(RedisQueueKeys):
    ADD_TO_QUEUE = "lpush"

    def __init__(
        self,
        queue: RedisList,
        credentials: Credentials,
        worker_id: str,
        heartbeat_seconds: float,
        levels: Mapping[str, Priority] | None = None,
    ) -> None:
        """`levels`: the priority of each JobType served (absent: normal)."""
        self._key = queue.list_key
        self._levels = {name: level for name, level in (levels or {}).items() if level != Priority.NORMAL}
        self._served = levels_served((levels or {}).values())
        self._level_keys = [level_queue(self._key, level) for level in self._served]
        self._turn = 0
        self._worker_id = worker_id
        self._heartbeat_ms = int(heartbeat_seconds * 1000)
        self._redis: Redis = redis_client(queue.address, queue.database, credentials, queue.tls)
        self._promote = self._redis.register_script(PROMOTE_TO_LIST)
        self._recover = self._redis.register_script(RECOVER)
        self._take = self._redis.register_script(TAKE_LIST)
        self._started = False
        self._settle = self._redis.register_script(SETTLE_LIST)
        self._completions = CompletionBatcher(
            self._redis.register_script(COMPLETE_LIST),
            (self._processing(worker_id), self._crashes),
            "",
            self._completed_key_names,
        )
        self._register_claim_scripts()

    def _processing(self, worker_id: str) -> str:
        return f"{self._key}:processing:{worker_id}"

    def _heartbeat(self, worker_id: str) -> str:
        return f"{self._key}:worker:{worker_id}"

    @property
    def _workers(self) -> str:
        return f"{self._key}:workers"

    @property
    def _crashes(self) -> str:
        return f"{self._key}:crashes"

    async def _recover_jobs_of(self, worker_id: str, *, force: bool, crashed: bool = True) -> int:
        keys = [
            self._heartbeat(worker_id),
            self._processing(worker_id),
            self._key,
            self._workers,
            self._crashes,
        ]
        args: list[Any] = [worker_id, "force" if force else "", "count" if crashed else ""]
        if self._levels and (force or not await self._redis.exists(keys[0])):
            held: list[Any] = await self._redis.lrange(keys[1], 0, -1)
            routed = [(job, queue) for job in held if (queue := self._queue_of(job)) != self._key]
            keys += [queue for _job, queue in routed]
            args += [job for job, _queue in routed]
        moved: int = await self._recover(keys=keys, args=args)
        return moved

    async def _beat(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._heartbeat(self._worker_id), b"1", px=self._heartbeat_ms)
            pipe.sadd(self._workers, self._worker_id)
            await pipe.execute()

    async def connect(self) -> None:
        with unavailable_on_connection_errors():
            if not self._started:
                # Jobs left by an earlier process with this id (a restarted container) are ours to give
                # back. Only at the start: on a reconnect, our processing list holds jobs running here.
                await self._recover_jobs_of(self._worker_id, force=True)
                self._started = True
            await self._beat()

    async def close(self) -> None:
        self._completions.cancel()
        with unavailable_on_connection_errors():
            try:
                # Whatever is left after the drain was not given back for a reason (an outage): not a crash.
                await self._recover_jobs_of(self._worker_id, force=True, crashed=False)
                await self._redis.delete(self._heartbeat(self._worker_id))
            finally:
                await self._redis.aclose()

    def _turns(self, count: int) -> str:
        """The levels of the next `count` turns, as TAKE_LIST reads them."""
        served = self._served
        return "".join(str(served.index(level) + 1) for level in turns(served, self._turn, count))

    async def _take_waiting(self, count: int, asked: Sequence[bytes] = ()) -> Any:
        processing = self._processing(self._worker_id)
        keys = [processing, self._crashes, *self._level_keys]
        taken: Any = await self._take(keys=keys, args=[count, self._turns(count), *asked])
        self._turn += len(taken[0])
        return taken

    async def receive(self, max_count: int, wait_seconds: float) -> Sequence[Delivery]:
        """Jobs waiting are taken in one script call (moved and their crash counts read), by the turns
        of their priority levels; only empty queues cost a blocking BLMOVE (polling, every
        LEVEL_POLL_SECONDS, when several levels are served), then one script call for the rest."""
        processing = self._processing(self._worker_id)
        count = min(max_count, RECEIVE_BATCH_MAX)
        with unavailable_on_connection_errors():
            taken: Any = await self._take_waiting(count)
            first: list[bytes] = []
            if not taken[0] and len(self._level_keys) > 1:
                deadline = time.monotonic() + wait_seconds
                while not taken[0] and time.monotonic() < deadline:
                    await asyncio.sleep(LEVEL_POLL_SECONDS)
                    taken = await self._take_waiting(count)
                if not taken[0]:
                    return []
            elif not taken[0]:
                waited: Any = await self._redis.blmove(
                    self._level_keys[0], processing, math.ceil(wait_seconds), src="RIGHT", dest="LEFT"
                )
                if waited is None:
                    return []
                first = [waited]
                self._turn += 1
                taken = await self._take_waiting(count - 1, [waited])
        bodies = [*first, *taken[0]]
        return [
            Delivery(body=body, handle=None, deliveries=1 + int(crashes or 0))
            for body, crashes in zip(bodies, taken[1], strict=True)
        ]

    async def stop_receiving(self) -> None:
        """Nothing to do: jobs are taken only by receive, and none wait in this process unhanded."""

    async def complete(self, delivery: Delivery, completed_key: CompletedKey | None) -> None:
        await self._completions.complete(Completion(delivery.body, delivery.deliveries > 1, completed_key))

    async def _settle_to(
        self, delivery: Delivery, destination: str | None, body: bytes, how: str, due: int = 0
    ) -> None:
        """Write `body` to `destination`, then remove the job; nothing is removed if the write fails."""
        processing = self._processing(self._worker_id)
        keys = [processing, destination or processing, self._crashes]
        with unavailable_on_connection_errors(), refused_on_response_errors(destination or processing):
            await self._settle(keys=keys, args=[delivery.body, body, how, due])

    async def release(self, delivery: Delivery) -> None:
        # Onto the end workers take from, of its level's queue: it runs next.
        await self._settle_to(delivery, self._queue_of(delivery.body), delivery.body, "rpush")

    async def maintain(self) -> None:
        with unavailable_on_connection_errors():
            await self._beat()
            for key in self._level_keys:
                await self._promote(keys=[f"{key}:delayed", key], args=[now_ms(), PROMOTE_BATCH])
            members: set[Any] = await self._redis.smembers(self._workers)
            for member in members:
                worker_id = member.decode() if isinstance(member, bytes) else str(member)
                if worker_id != self._worker_id:
                    await self._recover_jobs_of(worker_id, force=False)

    async def enqueue(self, body: bytes) -> None:
        with unavailable_on_connection_errors():
            await self._redis.lpush(self._queue_of(body), body)
