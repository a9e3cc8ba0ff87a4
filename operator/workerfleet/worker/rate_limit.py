"""JobType rate limits: each job of a limited type waits for its turn before its handler runs.

Turns are handed out by the queue server, so every worker of every pool sharing it keeps to one rate:
a Redis key per job type (`workerfleet:rate:<type>`) holds the theoretical time of the next start
(the generic cell rate algorithm). One script call reserves a turn and answers how long to wait for
it, so waiting workers never poll; turns are taken in the order asked. RabbitMQ pools use their
idempotency store's Redis; without one, each worker process keeps the rate by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from workerfleet.api.jobtype import JobTypeSpec, RateLimit

log = logging.getLogger("workerfleet.worker")

KEY_PREFIX = "workerfleet:rate:"
UNREACHABLE_PAUSE_SECONDS = 1.0
"""How long a job waits before it is given back when the server keeping the turns cannot be asked."""

# KEYS[1]: the type's key. ARGV: the interval between starts and the burst tolerance, in ms.
# Returns the ms to wait for the turn it reserved.
RESERVE_TURN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local next_tat = tat + interval
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil(next_tat - now + tolerance) + 1000)
return tostring(wait)
"""


def interval_ms(limit: RateLimit) -> float:
    return 1000.0 / limit.jobs_per_second


def tolerance_ms(limit: RateLimit) -> float:
    return (limit.burst - 1) * interval_ms(limit)


def reserve_locally(tat_ms: float, now_ms: float, limit: RateLimit) -> tuple[float, float]:
    """The same rule as the script, for one process: (ms to wait, the next theoretical start)."""
    tat = max(tat_ms, now_ms)
    return max(tat - tolerance_ms(limit) - now_ms, 0.0), tat + interval_ms(limit)


class Pacer(Protocol):
    async def take_turn(self, job_type: str) -> bool:
        """Wait for the job's turn; False when no turn could be had (the job is given back)."""
        ...

    async def close(self) -> None: ...


def limits_of(policies: Mapping[str, JobTypeSpec]) -> dict[str, RateLimit]:
    return {name: spec.rate_limit for name, spec in policies.items() if spec.rate_limit is not None}


class RedisPacer:
    """Turns from a Redis server shared by all workers."""

    def __init__(self, client: Redis, limits: Mapping[str, RateLimit]) -> None:
        self._client = client
        self._limits = dict(limits)
        self._script = client.register_script(RESERVE_TURN)

    async def take_turn(self, job_type: str) -> bool:
        limit = self._limits.get(job_type)
        if limit is None:
            return True
        try:
            reply = await self._script(
                keys=[KEY_PREFIX + job_type], args=[interval_ms(limit), tolerance_ms(limit)]
            )
        except (redis_errors.RedisError, OSError) as error:
            log.warning(
                "cannot take a turn for a rate-limited job; giving it back",
                extra={"job_type": job_type, "error": str(error)},
            )
            await asyncio.sleep(UNREACHABLE_PAUSE_SECONDS)
            return False
        wait_seconds = float(reply) / 1000
        if wait_seconds > 0:
            await asyncio.sleep(wait_seconds)
        return True

    async def close(self) -> None:
        await self._client.aclose()


class LocalPacer:
    """Turns kept by this process alone: when no shared server is at hand."""

    def __init__(self, limits: Mapping[str, RateLimit], clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._next: dict[str, float] = {}

    async def take_turn(self, job_type: str) -> bool:
        limit = self._limits.get(job_type)
        if limit is None:
            return True
        wait_ms, self._next[job_type] = reserve_locally(
            self._next.get(job_type, 0.0), self._clock() * 1000, limit
        )
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)
        return True

    async def close(self) -> None:
        """Nothing held."""
