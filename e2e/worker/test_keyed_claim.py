"""A keyed job delivered twice at the same time (a producer retry, a redelivery while the first copy still
runs, a list recovery after a missed heartbeat) runs once: the first copy claims its key before the
handler runs, and the second waits for the claim to end, then settles as a duplicate.

Real worker processes on real Redis (list, stream) and RabbitMQ with an idempotency store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devenv.queues import QueueUnderTest, RabbitMQQueue, RedisListQueue, RedisStreamQueue
from devenv.servers import RabbitMQServer, RedisServer
from devenv.waiting import eventually
from e2e.worker.conftest import Workers
from e2e.worker.test_worker_processes import events, produce
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Queue
from workerfleet.worker.backend import CompletedKey, Delivery, KeyClaim, KeyState, QueueBackend
from workerfleet.worker.rabbitmq import RabbitMQBackend
from workerfleet.worker.redis_list import RedisListBackend
from workerfleet.worker.redis_stream import RedisStreamBackend, StreamEntry

LEASE_SECONDS = 0.5


@pytest.fixture(params=["redis-list", "redis-stream", "rabbitmq-with-store"])
def shared_key_queue(request: pytest.FixtureRequest, redis_server: RedisServer) -> QueueUnderTest:
    """A queue on every backend whose completed keys all workers share."""
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    if request.param == "rabbitmq-with-store":
        rabbitmq: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
        return RabbitMQQueue(rabbitmq.address, name, rabbitmq, store=redis_server.address)
    if request.param == "redis-list":
        return RedisListQueue(redis_server.address, name)
    return RedisStreamQueue(redis_server.address, name)


def test_two_copies_of_a_keyed_job_delivered_at_once_to_two_workers_run_once(
    shared_key_queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    queue = shared_key_queue
    first = workers.start(queue)
    second = workers.start(queue)
    # The same job twice (a producer that retried its enqueue); each worker takes one (concurrency 1),
    # and the handler runs long enough for the two to overlap.
    produce(queue, [("twice", {"sleep": 2}), ("twice", {"sleep": 2})])

    def outcomes() -> Counter[str]:
        return Counter(first.jobs_total()) + Counter(second.jobs_total())

    settled = eventually(
        lambda: found if (found := outcomes()).total() >= 2 else None,
        what="both copies to be settled",
        timeout=30,
    )
    started = events(probe_log, "start")
    assert len(started) == 1, f"the keyed job ran {len(started)} times: {started}"
    assert settled == {"succeeded": 1, "duplicate": 1}, settled
    assert queue.entries(f"{queue.name}.dlq") == []
    assert queue.entries(queue.name) == []
    eventually(lambda: queue.held() == 0, what="no copy still held", timeout=10)


def _redis_list(address: str, name: str, worker_id: str) -> QueueBackend:
    queue = Queue.model_validate({"redis": {"address": address, "list": name}}).redis
    assert queue is not None
    return RedisListBackend(queue, Credentials(), worker_id, heartbeat_seconds=5)


def _redis_stream(address: str, name: str, worker_id: str) -> QueueBackend:
    spec = {"redisStream": {"address": address, "stream": name, "consumerGroup": "workers"}}
    queue = Queue.model_validate(spec).redis_stream
    assert queue is not None
    return RedisStreamBackend(
        queue, Credentials(), worker_id, reclaim_idle_seconds=60, reclaim_interval_seconds=60
    )


def _rabbitmq_store(address: str, name: str, worker_id: str) -> QueueBackend:
    """Claims live in the store alone: the broker is never contacted here (nor connected to)."""
    spec = {"rabbitmq": {"address": "127.0.0.1:1", "queue": name, "idempotencyStore": {"address": address}}}
    queue = Queue.model_validate(spec).rabbitmq
    assert queue is not None
    return RabbitMQBackend(queue, Credentials(), prefetch=1)


Opener = Callable[[str, str, str], QueueBackend]


@asynccontextmanager
async def opened(opener: Opener, address: str, name: str, worker_id: str) -> AsyncIterator[QueueBackend]:
    backend = opener(address, name, worker_id)
    if opener is not _rabbitmq_store:
        await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("opener", "claim_key"),
    [
        (_redis_list, "{name}:claim:probe:k"),
        (_redis_stream, "{name}:claim:probe:k"),
        (_rabbitmq_store, "{name}:done:claim/probe:k"),
    ],
    ids=["redis-list", "redis-stream", "rabbitmq-store"],
)
def test_a_claim_is_one_holders_until_released_by_it_or_its_lease_runs_out(
    redis_server: RedisServer, opener: Opener, claim_key: str
) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"

    async def check() -> None:
        async with (
            opened(opener, redis_server.address, name, "worker-a") as first,
            opened(opener, redis_server.address, name, "worker-b") as second,
        ):
            claim_a = KeyClaim("probe:k", "worker-a", LEASE_SECONDS)
            claim_b = KeyClaim("probe:k", "worker-b", LEASE_SECONDS)
            assert (await first.claim(claim_a)).state is KeyState.CLAIMED
            with redis_server.client() as client:
                assert client.get(claim_key.format(name=name)) == b"worker-a"
            held = await second.claim(claim_b)
            assert held.state is KeyState.HELD
            assert 0 < held.held_for_seconds <= LEASE_SECONDS
            assert (await first.claim(claim_a)).state is KeyState.CLAIMED, "a holder takes over its own"
            await second.release_claim(claim_b)  # not the holder: nothing changes
            assert (await second.claim(claim_b)).state is KeyState.HELD
            await asyncio.sleep(LEASE_SECONDS + 0.1)  # the holder died: its lease runs out
            assert (await second.claim(claim_b)).state is KeyState.CLAIMED
            assert (await first.claim(claim_a)).state is KeyState.HELD
            await second.release_claim(claim_b)
            assert (await first.claim(claim_a)).state is KeyState.CLAIMED

    asyncio.run(check())


@pytest.mark.parametrize("opener", [_redis_list, _redis_stream], ids=["redis-list", "redis-stream"])
def test_completing_a_keyed_job_ends_its_claim_and_every_copy_is_then_a_duplicate(
    redis_server: RedisServer, opener: Opener
) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"

    async def check() -> None:
        async with (
            opened(opener, redis_server.address, name, "worker-a") as holder,
            opened(opener, redis_server.address, name, "worker-b") as other,
        ):
            assert (await holder.claim(KeyClaim("probe:k", "worker-a", 60))).state is KeyState.CLAIMED
            # A stream delivery's handle names its entry and stream; a list's needs none.
            handle = StreamEntry(name, b"0-1") if opener is _redis_stream else None
            await holder.complete(Delivery(body=b"{}", handle=handle), CompletedKey("probe:k", 3600))
            with redis_server.client() as client:
                assert not client.exists(f"{name}:claim:probe:k")
            answer = await other.claim(KeyClaim("probe:k", "worker-b", 60))
            assert answer.state is KeyState.COMPLETED

    asyncio.run(check())
