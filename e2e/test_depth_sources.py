"""Depth sources of many pools share one client per queue server, against a real Redis."""

from __future__ import annotations

import asyncio

import redis

from devenv.servers import RedisServer
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import RedisList
from workerfleet.backends.redis_common import shared_clients
from workerfleet.backends.redis_list import RedisListDepth

POOLS = 200


def test_two_hundred_pools_on_one_redis_read_through_one_client(redis_server: RedisServer) -> None:
    host, port = redis_server.address.split(":")
    admin = redis.Redis(host=host, port=int(port))
    admin.rpush("jobs:pool-7", "{}", "{}")
    baseline = len(admin.client_list())

    async def scenario() -> tuple[list[int], int, int, int]:
        # Given 200 pools whose queues live on the same Redis
        sources = [
            RedisListDepth(
                RedisList.model_validate({"address": redis_server.address, "list": f"jobs:pool-{n}"}),
                Credentials(),
            )
            for n in range(POOLS)
        ]
        # When every pool polls at once
        samples = await asyncio.gather(*(source.read() for source in sources))
        clients, connections = shared_clients(), len(admin.client_list()) - baseline
        for source in sources:
            await source.close()
        return [sample.depth for sample in samples], clients, connections, shared_clients()

    depths, clients, connections, left_open = asyncio.run(scenario())

    # Then each reads its own queue, through one client whose connections are far fewer than the pools
    assert depths[7] == 2
    assert sum(depths) == 2
    assert clients == 1
    assert 1 <= connections < POOLS / 2, connections
    # And the last pool to stop closes it
    assert left_open == 0
    admin.close()
