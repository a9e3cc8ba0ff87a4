"""The operator's queue depth sources against a real Redis: the depth the autoscaler (and scale-to-zero)
acts on counts every job still to be done, and no job that is done."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis

from devenv.servers import RedisServer
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import RedisList, RedisStream
from workerfleet.backends.base import QueueSample
from workerfleet.backends.redis_list import RedisListDepth
from workerfleet.backends.redis_stream import RedisStreamDepth


def client_of(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port)


def stream_depth(server: RedisServer, stream: str, group: str = "workers") -> QueueSample:
    async def read() -> QueueSample:
        source = RedisStreamDepth(
            RedisStream.model_validate({"address": server.address, "stream": stream, "consumerGroup": group}),
            Credentials(),
        )
        try:
            return await source.read()
        finally:
            await source.close()

    return asyncio.run(read())


def list_depth(server: RedisServer, key: str) -> QueueSample:
    async def read() -> QueueSample:
        source = RedisListDepth(
            RedisList.model_validate({"address": server.address, "list": key}), Credentials()
        )
        try:
            return await source.read()
        finally:
            await source.close()

    return asyncio.run(read())


def test_stream_depth_after_xdel_counts_only_entries_not_yet_delivered(redis_server: RedisServer) -> None:
    stream = f"jobs-{uuid.uuid4().hex[:8]}"
    with client_of(redis_server) as client:
        ids = [client.xadd(stream, {"job": f"job-{index}"}) for index in range(10)]
        client.xgroup_create(stream, "workers", id="0")
        delivered = client.xreadgroup("workers", "w1", {stream: ">"}, count=6)
        client.xack(stream, "workers", *[entry_id for entry_id, _fields in delivered[0][1]])
        client.xdel(stream, ids[7])  # not delivered yet: Redis can no longer tell the group's lag
        [group] = client.xinfo_groups(stream)
        assert group["lag"] is None
    # Left: entries 6, 8 and 9. The 6 acknowledged entries stay in the stream but are done.
    assert stream_depth(redis_server, stream).depth == 3


def test_stream_depth_counts_waiting_pending_and_delayed_retries(redis_server: RedisServer) -> None:
    stream = f"jobs-{uuid.uuid4().hex[:8]}"
    now_ms = int(time.time() * 1000)
    with client_of(redis_server) as client:
        for index in range(5):
            client.xadd(stream, {"job": f"job-{index}"})
        client.xgroup_create(stream, "workers", id="0")
        client.xreadgroup("workers", "w1", {stream: ">"}, count=2)  # two in flight, not acknowledged
        client.zadd(f"{stream}:delayed", {"due": now_ms - 1_000, "later": now_ms + 600_000})
    # 3 waiting + 2 in flight + 2 retries waiting for their backoff
    assert stream_depth(redis_server, stream).depth == 7


def test_list_depth_counts_waiting_in_flight_and_delayed_retries(redis_server: RedisServer) -> None:
    key = f"jobs-{uuid.uuid4().hex[:8]}"
    now_ms = int(time.time() * 1000)
    with client_of(redis_server) as client:
        client.lpush(key, "a", "b")
        client.sadd(f"{key}:workers", "w1", "w2")
        client.lpush(f"{key}:processing:w1", "c")
        client.lpush(f"{key}:processing:w2", "d", "e")
        client.zadd(f"{key}:delayed", {"due": now_ms - 1_000, "later": now_ms + 600_000})
    # 2 waiting + 3 in flight on two workers + 2 retries waiting for their backoff
    assert list_depth(redis_server, key).depth == 7


def test_a_pool_with_only_delayed_retries_is_not_idle(redis_server: RedisServer) -> None:
    """Scale-to-zero acts on depth: retries that wait in the delayed set are only moved back onto the
    queue by a running worker, so the pool must not sleep while there are any."""
    key = f"jobs-{uuid.uuid4().hex[:8]}"
    with client_of(redis_server) as client:
        client.zadd(f"{key}:delayed", {"later": int(time.time() * 1000) + 600_000})
    assert list_depth(redis_server, key).depth == 1
    assert list_depth(redis_server, f"jobs-{uuid.uuid4().hex[:8]}").depth == 0
