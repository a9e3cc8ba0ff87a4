"""Jobs per second of the worker runtime with a no-op handler on one process against a local Redis,
next to the floor: a bare redis-py loop that pops the same jobs with BRPOP (they were pushed with LPUSH).

Run with `make bench`. Starts its own redis-server on a free loopback port, and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from devenv.servers import RedisServer
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import RedisList
from workerfleet.worker import jsonlog
from workerfleet.worker.envelope import encode, new_envelope
from workerfleet.worker.handlers import Job
from workerfleet.worker.metrics import WorkerMetrics
from workerfleet.worker.redis_list import RedisListBackend
from workerfleet.worker.runtime import Runtime

PUSH_BATCH = 1_000
CONCURRENCIES = (1, 16)
NOOP = JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 30})


def fill(client: redis.Redis, key: str, jobs: int) -> None:
    """Push `jobs` envelopes (untimed: both contenders start from the same full list)."""
    body = encode(new_envelope("noop", {"n": 0}, now=datetime.now(UTC)))
    for start in range(0, jobs, PUSH_BATCH):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(min(PUSH_BATCH, jobs - start)):
                pipe.lpush(key, body)
            pipe.execute()


def bare_loop(client: redis.Redis, key: str, jobs: int) -> float:
    """Jobs per second of BRPOP and nothing else: the floor any runtime on Redis lists sits above."""
    fill(client, key, jobs)
    started = time.perf_counter()
    for _ in range(jobs):
        if client.brpop([key], timeout=5) is None:
            raise RuntimeError("the bare loop ran dry before all jobs were popped")
    return jobs / (time.perf_counter() - started)


async def runtime_loop(address: str, key: str, jobs: int, concurrency: int) -> float:
    """Jobs per second of the worker runtime (reliable list, policy, metrics, JSON logs) to completion."""
    done = 0
    all_done = asyncio.Event()

    async def noop(job: Job) -> None:
        nonlocal done
        done += 1
        if done == jobs:
            all_done.set()

    backend = RedisListBackend(
        RedisList.model_validate({"address": address, "list": key}),
        Credentials(),
        "bench",
        heartbeat_seconds=15,
    )
    runtime = Runtime(
        backend=backend,
        policies={"noop": NOOP},
        handlers={"noop": noop},
        metrics=WorkerMetrics("bench", "bench"),
        pool="bench",
        revision="bench",
        worker_id="bench",
        concurrency=concurrency,
        drain_seconds=5,
        pool_dead_letter_queue=f"{key}.dlq",
        maintenance_interval_seconds=5,
    )
    stop = asyncio.Event()
    started = time.perf_counter()
    consuming = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(all_done.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    stop.set()
    await consuming
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per contender; the best one counts")
    args = parser.parse_args()
    bare: list[float] = []
    runtime: dict[int, list[float]] = {concurrency: [] for concurrency in CONCURRENCIES}
    with tempfile.TemporaryDirectory() as directory, open(os.devnull, "w") as discard:
        # Logs are formatted as in production, then discarded, so their cost is in the numbers.
        jsonlog.configure("INFO", discard)
        server = RedisServer(Path(directory))
        server.start()
        try:
            client = redis.Redis(host="127.0.0.1", port=server.port)
            # Rounds alternate between contenders, so a busy moment on the machine hits them alike.
            for round_number in range(args.rounds):
                bare.append(bare_loop(client, f"bench:bare:{round_number}", args.jobs))
                for concurrency in CONCURRENCIES:
                    key = f"bench:runtime:{concurrency}:{round_number}"
                    fill(client, key, args.jobs)
                    rate = asyncio.run(runtime_loop(server.address, key, args.jobs, concurrency))
                    runtime[concurrency].append(rate)
            client.close()
        finally:
            server.stop()
    floor = max(bare)
    print(
        f"{args.jobs} jobs per round, best of {args.rounds} rounds;"
        " no-op handler, one process, local redis-server"
    )
    print(f"bare redis-py BRPOP loop:           {floor:8,.0f} jobs/s")
    for concurrency, rates in runtime.items():
        best = max(rates)
        print(
            f"workerfleet worker, concurrency {concurrency:<2}: {best:8,.0f} jobs/s"
            f"   ratio to the bare loop: {best / floor:.2f}"
        )


if __name__ == "__main__":
    main()
