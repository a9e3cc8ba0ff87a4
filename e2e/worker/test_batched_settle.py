"""Jobs waiting are taken several per round trip, and completions finishing together share one
script call, on a real redis-server: every job still ends exactly once, its idempotency key recorded
with it, nothing left on the processing list or pending; a batch of completions does not make one
job's failure another's."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import redis

from devenv.servers import RedisServer
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import RedisList, RedisStream
from workerfleet.worker.backend import CompletedKey, Delivery, QueueBackend
from workerfleet.worker.envelope import encode, new_envelope
from workerfleet.worker.redis_list import RedisListBackend
from workerfleet.worker.redis_stream import RedisStreamBackend

JOBS = 64


def commands_run(client: redis.Redis, command: str) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def backend_for(kind: str, address: str, key: str) -> QueueBackend:
    if kind == "list":
        return RedisListBackend(
            RedisList.model_validate({"address": address, "list": key}), Credentials(), "w1", 15
        )
    return RedisStreamBackend(
        RedisStream.model_validate({"address": address, "stream": key, "consumerGroup": "g"}),
        Credentials(),
        "w1",
        reclaim_idle_seconds=60,
        reclaim_interval_seconds=60,
    )


@pytest.mark.parametrize("kind", ["list", "stream"])
def test_jobs_completing_together_share_round_trips_and_each_ends_once(
    redis_server: RedisServer, kind: str
) -> None:
    key = f"jobs-{uuid.uuid4().hex[:8]}"
    client = redis_server.client()

    async def scenario() -> list[Delivery]:
        backend = backend_for(kind, redis_server.address, key)
        await backend.connect()
        for n in range(JOBS):
            await backend.enqueue(encode(new_envelope("work", {"n": n}, now=datetime.now(UTC))))
        taken = await backend.receive(JOBS, 1.0)
        calls_before = commands_run(client, "evalsha")
        await asyncio.gather(
            *(backend.complete(delivery, CompletedKey(f"work:{n}", 60)) for n, delivery in enumerate(taken))
        )
        calls = commands_run(client, "evalsha") - calls_before
        # Completions issued together went out in far fewer script calls (round trips) than one each.
        assert 0 < calls <= JOBS // 4, f"{calls} script calls for {JOBS} completions"
        await backend.close()
        return list(taken)

    taken = asyncio.run(scenario())
    # Every job was taken by one receive (several per round trip), and each completion took effect.
    assert len(taken) == JOBS
    assert all(delivery.deliveries == 1 for delivery in taken)
    assert all(client.exists(f"{key}:done:work:{n}") for n in range(JOBS))
    if kind == "list":
        assert client.llen(key) == 0
        assert client.llen(f"{key}:processing:w1") == 0
    else:
        assert client.xpending(key, "g")["pending"] == 0


def test_a_list_receive_reads_the_crash_counts_of_the_jobs_it_takes(redis_server: RedisServer) -> None:
    key = f"jobs-{uuid.uuid4().hex[:8]}"
    client = redis_server.client()
    bodies = [encode(new_envelope("work", {"n": n}, now=datetime.now(UTC))) for n in range(3)]
    client.hset(f"{key}:crashes", bodies[1], 2)

    async def scenario() -> list[Delivery]:
        backend = backend_for("list", redis_server.address, key)
        await backend.connect()
        for body in bodies:
            await backend.enqueue(body)
        taken = list(await backend.receive(10, 1.0))
        # An empty queue: the receive waits (BLMOVE), and the job pushed meanwhile is taken with its count.
        waiting = asyncio.create_task(backend.receive(10, 2.0))
        await asyncio.sleep(0.2)
        client.hset(f"{key}:crashes", b"late", 1)
        await backend.enqueue(b"late")
        taken.extend(await waiting)
        await backend.close()
        return taken

    taken = asyncio.run(scenario())
    assert [delivery.body for delivery in taken] == [*bodies, b"late"]
    assert [delivery.deliveries for delivery in taken] == [1, 3, 1, 2]


def test_a_completion_whose_own_write_fails_fails_alone(redis_server: RedisServer) -> None:
    key = f"jobs-{uuid.uuid4().hex[:8]}"
    client = redis_server.client()

    async def scenario() -> list[BaseException | None]:
        backend = backend_for("list", redis_server.address, key)
        await backend.connect()
        for n in range(2):
            await backend.enqueue(encode(new_envelope("work", {"n": n}, now=datetime.now(UTC))))
        first, second = await backend.receive(2, 1.0)
        # The first job's crash record is a string, so its HDEL fails (WRONGTYPE) inside the batch.
        broken = Delivery(first.body, first.handle, deliveries=2)
        client.delete(f"{key}:crashes")
        client.set(f"{key}:crashes", b"not a hash")
        results = await asyncio.gather(
            backend.complete(broken, None), backend.complete(second, None), return_exceptions=True
        )
        client.delete(f"{key}:crashes")
        await backend.close()
        return [result if isinstance(result, BaseException) else None for result in results]

    first_result, second_result = asyncio.run(scenario())
    assert isinstance(first_result, redis.ResponseError)
    assert "WRONGTYPE" in str(first_result)
    assert second_result is None
