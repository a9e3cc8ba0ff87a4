"""A JobType rate limit kept in a real Redis server: several workers' pacers share one rate."""

from __future__ import annotations

import asyncio
import time

from devenv.servers import RedisServer
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import RateLimit
from workerfleet.worker.rate_limit import RedisPacer
from workerfleet.worker.redis_support import redis_client

RATE = 20.0
SECONDS = 3.0
WORKERS = 3


def test_three_workers_share_one_rate_within_ten_percent(redis_server: RedisServer) -> None:
    async def run() -> int:
        limits = {"limited-" + str(time.monotonic_ns()): RateLimit(jobs_per_second=RATE)}
        [job_type] = limits
        pacers = [
            RedisPacer(redis_client(redis_server.address, 0, Credentials()), limits) for _ in range(WORKERS)
        ]
        started = time.monotonic()
        granted: list[float] = []

        async def turn(pacer: RedisPacer) -> None:
            assert await pacer.take_turn(job_type)
            granted.append(time.monotonic() - started)

        async def worker(pacer: RedisPacer) -> None:
            while time.monotonic() - started < SECONDS:
                await asyncio.gather(*(turn(pacer) for _ in range(4)))  # concurrency 4

        try:
            await asyncio.gather(*(worker(pacer) for pacer in pacers))
        finally:
            for pacer in pacers:
                await pacer.close()
        return sum(1 for moment in granted if moment < SECONDS)

    turns = asyncio.run(run())
    expected = RATE * SECONDS
    print(f"{turns} turns in {SECONDS:g} s across {WORKERS} workers at {RATE:g}/s (expected {expected:g})")
    assert abs(turns - expected) <= 0.1 * expected, f"{turns} turns in {SECONDS}s at {RATE}/s"
