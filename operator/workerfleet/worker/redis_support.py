"""What the two Redis backends share: the client, error translation, due-retry promotion, and the
batching of completions into one transaction per round trip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from workerfleet.api.common import TLSConfig
from workerfleet.api.common import split_host_port as api_split_host_port
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import Priority
from workerfleet.planners.priority import level_queue
from workerfleet.redis_options import connection_options, server_options
from workerfleet.tls import tls_problem
from workerfleet.worker.backend import (
    BackendUnavailable,
    ClaimAnswer,
    CompletedKey,
    Delivery,
    DestinationRefused,
    KeyClaim,
    KeyState,
)
from workerfleet.worker.envelope import DEFAULT_LIMITS, peek_job_type
from workerfleet.worker.settings import ConfigurationError

# Longer than the longest blocking read the backends issue, so a blocked read is not cut off.
SOCKET_TIMEOUT_SECONDS = 15.0
CONNECT_TIMEOUT_SECONDS = 5.0
PROMOTE_BATCH = 100


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` into its parts; a bad address is a configuration error."""
    try:
        return api_split_host_port(address)
    except ValueError as error:
        raise ConfigurationError(str(error)) from error


def redis_client(
    address: str, database: int, credentials: Credentials, tls: TLSConfig | None = None
) -> Redis:
    host, port = split_host_port(address)
    options: dict[str, Any] = {
        **server_options(host, port, database, credentials),
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        # One immediate retry covers a connection the server closed while idle; longer outages surface
        # at once as BackendUnavailable, so the runtime's own backoff (and logs) take over.
        "retry": Retry(NoBackoff(), 1),
    }
    if tls is None:
        return Redis(**options)
    pool = ConnectionPool(**connection_options(tls, credentials), **options)
    return Redis.from_pool(pool)


@contextmanager
def unavailable_on_connection_errors() -> Iterator[None]:
    """Redis connection trouble becomes BackendUnavailable, which the runtime waits out."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
        raise BackendUnavailable(
            f"redis: {tls_problem(error) or f'{type(error).__name__}: {error}'}"
        ) from error


@contextmanager
def refused_on_response_errors(destination: str) -> Iterator[None]:
    """A settle script's error reply (WRONGTYPE from the destination, say) becomes DestinationRefused.
    The scripts write the destination first, so an error there stops them before the job is removed."""
    try:
        yield
    except redis_errors.ResponseError as error:
        raise DestinationRefused(destination, f"redis: {error}") from error


def now_ms() -> int:
    return int(time.time() * 1000)


def due_ms(delay_seconds: float) -> int:
    return now_ms() + int(delay_seconds * 1000)


# Claiming a keyed job's idempotency key before its handler runs, in one round trip. KEYS[1]: the
# completed key; KEYS[2]: the claim. ARGV: the holder, the lease (ms). Returns -1 when the key was
# completed, 0 when the claim is the holder's now (taken, or its own renewed), else the ms left on
# another holder's lease.
CLAIM_KEY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  local left = redis.call('PTTL', KEYS[2])
  if left < 1 then left = 1 end
  return left
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 0
"""

# Ending a claim only if it is still the holder's (its lease may have run out and another taken it).
# KEYS[1]: the claim. ARGV[1]: the holder.
RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

CLAIM_COMPLETED = -1
CLAIM_TAKEN = 0


def claim_answer(reply: int) -> ClaimAnswer:
    """The CLAIM_KEY script's reply as the runtime reads it."""
    if reply == CLAIM_COMPLETED:
        return ClaimAnswer(KeyState.COMPLETED)
    if reply == CLAIM_TAKEN:
        return ClaimAnswer(KeyState.CLAIMED)
    return ClaimAnswer(KeyState.HELD, held_for_seconds=reply / 1000)


async def claim_in(script: AsyncScript, done: str, claimed: str, claim: KeyClaim) -> ClaimAnswer:
    """Run the CLAIM_KEY script for `claim` on the completed key `done` and the claim key `claimed`."""
    lease_ms = max(int(claim.lease_seconds * 1000), 1)
    reply: int = await script(keys=[done, claimed], args=[claim.holder, lease_ms])
    return claim_answer(int(reply))


@dataclass(frozen=True)
class Completion:
    """What completing one job takes: the job as the backend holds it (the body on the processing list,
    or the stream entry id), whether a crash count of it is to be cleared, and the idempotency key to
    record (and whose claim ends)."""

    held: bytes
    clear_crashes: bool
    completed_key: CompletedKey | None


# Completing a batch of jobs in one script call (one command, one reply: a transaction of the same
# commands costs the client three to four times the work). Each command runs under pcall, so one job's
# error (WRONGTYPE on its key) is its own and the other jobs' commands still run, as in MULTI/EXEC.
# KEYS: the list's processing list or the stream, the crash counts (the list's), then per job with an
# idempotency key its completed key and its claim, in the jobs' order. ARGV: the stream's group (unused
# on a list), then per job the job as held, "1" to clear its crash count, the key's TTL in seconds (""
# without a key). Returns per job "" or its first command's error.
_COMPLETE_BATCH = """
local function first_error(found, reply)
  if found then return found end
  if type(reply) == 'table' and reply.err then return reply.err end
  return nil
end
local results = {}
local key = 3
for i = 2, #ARGV, 3 do
  local found = first_error(nil, redis.pcall(%(remove)s))
  if ARGV[i + 1] == '1' then found = first_error(found, redis.pcall('HDEL', KEYS[2], ARGV[i])) end
  if ARGV[i + 2] ~= '' then
    found = first_error(found, redis.pcall('SET', KEYS[key], '1', 'EX', ARGV[i + 2]))
    found = first_error(found, redis.pcall('DEL', KEYS[key + 1]))
    key = key + 2
  end
  results[#results + 1] = found or ''
end
return results
"""
COMPLETE_LIST = _COMPLETE_BATCH % {"remove": "'LREM', KEYS[1], 1, ARGV[i]"}
COMPLETE_STREAM = _COMPLETE_BATCH % {"remove": "'XACK', KEYS[1], ARGV[1], ARGV[i]"}


class CompletionBatcher:
    """Completions of jobs that finish while a batch is on the wire go out together in the next one: one
    script call (one round trip) for all of them instead of one each. Each job's commands stay atomic (the
    whole batch is), and each caller returns only once the server has executed them, or gets its own
    commands' error, or the batch's connection error (BackendUnavailable), as a lone call would. Once
    every caller of the batch on the wire has stopped waiting (the runtime gave up on a silent server),
    sending it is cancelled too, as a lone call's would be: nothing outlives the callers.

    `script`: COMPLETE_LIST or COMPLETE_STREAM, registered; `queue_keys`: its first two KEYS; `group`: its
    ARGV[1]; `key_names`: a completed key's name and its claim's."""

    def __init__(
        self,
        script: AsyncScript,
        queue_keys: tuple[str, str],
        group: str,
        key_names: Callable[[CompletedKey], tuple[str, str]],
    ) -> None:
        self._script = script
        self._queue_keys = queue_keys
        self._group = group
        self._key_names = key_names
        self._waiting: list[tuple[Completion, asyncio.Future[None]]] = []
        self._sending: list[tuple[Completion, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def complete(self, completion: Completion) -> None:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((completion, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all())
        try:
            await done
        except asyncio.CancelledError:
            if all(waiter.done() for _completion, waiter in self._sending + self._waiting):
                self.cancel()
            raise

    def cancel(self) -> None:
        """Stop sending (the backend closes): callers still waiting are cancelled."""
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        for _completion, done in self._waiting:
            done.cancel()
        self._waiting = []

    async def _send_all(self) -> None:
        while self._waiting:
            self._sending, self._waiting = self._waiting, []
            await self._send(self._sending)
        self._sending = []

    def _arguments(self, batch: list[tuple[Completion, asyncio.Future[None]]]) -> tuple[list[str], list[Any]]:
        keys: list[str] = [*self._queue_keys]
        args: list[Any] = [self._group]
        for completion, _done in batch:
            ttl: Any = ""
            if completion.completed_key is not None:
                keys.extend(self._key_names(completion.completed_key))
                ttl = completion.completed_key.ttl_seconds
            args.extend((completion.held, b"1" if completion.clear_crashes else b"", ttl))
        return keys, args

    async def _send(self, batch: list[tuple[Completion, asyncio.Future[None]]]) -> None:
        keys, args = self._arguments(batch)
        try:
            with unavailable_on_connection_errors():
                replies: list[Any] = await self._script(keys=keys, args=args)
        except asyncio.CancelledError:
            for _completion, done in batch:
                done.cancel()
            raise
        except Exception as error:
            for _completion, done in batch:
                if not done.done():
                    done.set_exception(error)
            return
        for reply, (_completion, done) in zip(replies, batch, strict=True):
            if done.done():
                continue
            if reply:
                done.set_exception(redis_errors.ResponseError(_text(reply)))
            else:
                done.set_result(None)


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


class RedisQueueKeys:
    """What both Redis backends keep beside their queue (the list or stream at `_key`): retries waiting
    for their backoff (`<key>:delayed`, scored by due time), completed idempotency keys
    (`<key>:done:<type>:<key>`) and claims on keys whose job is running (`<key>:claim:<type>:<key>`,
    holding the worker id, expiring with the lease), and the settling that writes to them. A backend
    says how it adds a job to another queue of its kind (`ADD_TO_QUEUE`), runs its settle script
    (`_settle_to`) and registers the claim scripts (`_register_claim_scripts`). Each priority level's
    queue has its own retries (`<level's queue>:delayed`); `_levels` maps the JobTypes above or below
    normal to their level."""

    ADD_TO_QUEUE: ClassVar[str]
    _key: str
    _levels: Mapping[str, Priority]
    _redis: Redis
    _claim_script: AsyncScript
    _release_claim_script: AsyncScript

    def _register_claim_scripts(self) -> None:
        self._claim_script = self._redis.register_script(CLAIM_KEY)
        self._release_claim_script = self._redis.register_script(RELEASE_CLAIM)

    def _queue_of(self, body: bytes) -> str:
        """The queue of the job's priority level: the pool's own for normal, an unknown type or a
        message that is not an envelope."""
        if not self._levels:
            return self._key
        job_type = peek_job_type(body, DEFAULT_LIMITS)
        return level_queue(self._key, self._levels.get(job_type or "", Priority.NORMAL))

    def _delayed_of(self, body: bytes) -> str:
        return f"{self._queue_of(body)}:delayed"

    def _done(self, key: str) -> str:
        return f"{self._key}:done:{key}"

    def _claimed(self, key: str) -> str:
        return f"{self._key}:claim:{key}"

    def _completed_key_names(self, completed_key: CompletedKey) -> tuple[str, str]:
        """Where a completed job's idempotency key is kept, and its claim (which completing ends: from
        then on the completed key answers every copy)."""
        return self._done(completed_key.key), self._claimed(completed_key.key)

    async def _settle_to(
        self, delivery: Delivery, destination: str | None, body: bytes, how: str, due: int = 0
    ) -> None:
        """Write `body` to `destination` (`how`: a command of the settle script), then remove the job;
        nothing is removed if the write fails."""
        raise NotImplementedError

    async def retry(self, delivery: Delivery, body: bytes, delay_seconds: float) -> None:
        await self._settle_to(delivery, self._delayed_of(body), body, "zadd", due_ms(delay_seconds))

    async def move(self, delivery: Delivery, queue: str | None, body: bytes) -> None:
        await self._settle_to(delivery, queue, body, self.ADD_TO_QUEUE if queue is not None else "none")

    async def defer(self, delivery: Delivery, delay_seconds: float) -> None:
        await self._settle_to(
            delivery, self._delayed_of(delivery.body), delivery.body, "defer", due_ms(delay_seconds)
        )

    async def claim(self, claim: KeyClaim) -> ClaimAnswer:
        with unavailable_on_connection_errors():
            return await claim_in(self._claim_script, self._done(claim.key), self._claimed(claim.key), claim)

    async def release_claim(self, claim: KeyClaim) -> None:
        with unavailable_on_connection_errors():
            await self._release_claim_script(keys=[self._claimed(claim.key)], args=[claim.holder])


# KEYS[1]: sorted set of retries scored by due time in ms; KEYS[2]: the queue. ARGV: now (ms), batch.
# Atomic, so two workers promoting at once cannot both move (and so duplicate) a retry.
PROMOTE_TO_LIST = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('LPUSH', KEYS[2], job)
end
return #due
"""

PROMOTE_TO_STREAM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('XADD', KEYS[2], '*', 'job', job)
end
return #due
"""

# Settling a job in one script, destination first: an error reply from the write (WRONGTYPE, OOM) stops
# the script before the job is removed, which MULTI/EXEC would not do (it runs the other commands).
# KEYS[1]: the processing list; KEYS[2]: the destination; KEYS[3]: the crash counts. ARGV: the job as
# held, the body to write, how ("lpush" a dead-letter or review queue, "rpush" back onto the queue,
# "zadd" a retry, "defer" it unchanged for later, "none" to drop), the retry's due time. A job settled
# here did not crash its worker, so its crash count goes, except when it goes back unchanged ("rpush":
# given back on shutdown; "defer": a copy of it was running elsewhere, so it did not run here).
SETTLE_LIST = """
local how = ARGV[3]
if how == 'lpush' then redis.call('LPUSH', KEYS[2], ARGV[2])
elseif how == 'rpush' then redis.call('RPUSH', KEYS[2], ARGV[2])
elseif how == 'zadd' or how == 'defer' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2]) end
if how ~= 'rpush' and how ~= 'defer' then redis.call('HDEL', KEYS[3], ARGV[1]) end
return redis.call('LREM', KEYS[1], 1, ARGV[1])
"""

# The same for a stream entry. KEYS[1]: the stream; KEYS[2]: the destination. ARGV: group, entry id,
# the body to write, how ("xadd" to a stream, "zadd" a retry, "defer" the same, "none"), the due time.
SETTLE_STREAM = """
local how = ARGV[4]
if how == 'xadd' then redis.call('XADD', KEYS[2], '*', 'job', ARGV[3])
elseif how == 'zadd' or how == 'defer' then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3]) end
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""
