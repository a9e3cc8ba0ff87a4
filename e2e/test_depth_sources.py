"""Depth sources of many pools share one client per queue server, against a real Redis; what a Redis
answers is read within the operator's bounds."""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import threading

import pytest
import redis

from devenv.servers import RedisServer
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import RedisList
from workerfleet.backends.base import QueueSample, QueueUnreachableError
from workerfleet.backends.bounds import BoundReason
from workerfleet.backends.redis_common import shared_clients
from workerfleet.backends.redis_list import RedisListDepth
from workerfleet.backends.redis_replies import MAX_REDIS_REPLY_BYTES

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


def _read_list(address: str, key: str) -> QueueSample | QueueUnreachableError:
    async def read() -> QueueSample | QueueUnreachableError:
        source = RedisListDepth(RedisList.model_validate({"address": address, "list": key}), Credentials())
        try:
            return await source.read()
        except QueueUnreachableError as error:
            return error
        finally:
            await source.close()

    return asyncio.run(read())


def test_a_job_past_the_bound_at_the_head_of_a_list_fails_that_pool_alone(redis_server: RedisServer) -> None:
    # Given a list whose oldest job is larger than the operator reads, and a list of small jobs
    host, port = redis_server.address.split(":")
    admin = redis.Redis(host=host, port=int(port))
    admin.delete("jobs:huge", "jobs:small")
    admin.lpush("jobs:huge", b"x" * (MAX_REDIS_REPLY_BYTES + 1), "{}")  # the huge job is taken next
    admin.rpush("jobs:small", "{}", "{}", "{}")
    try:
        # When both pools read their depth
        huge = _read_list(redis_server.address, "jobs:huge")
        small = _read_list(redis_server.address, "jobs:small")
    finally:
        admin.delete("jobs:huge", "jobs:small")
        admin.close()

    # Then the first fails with the bound as reason, and the other reads its depth
    assert isinstance(huge, QueueUnreachableError), huge
    assert huge.reason == BoundReason.TOO_LARGE, huge
    assert f"larger than {MAX_REDIS_REPLY_BYTES // 2**20} MiB" in str(huge)
    assert isinstance(small, QueueSample), small
    assert small.depth == 3


class HostileRedis(socketserver.ThreadingTCPServer):
    """A 'Redis' on loopback answering every command with arrays nested 100,000 deep, or never."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: str) -> None:
        stopping = self.stopping = threading.Event()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    while self.request.recv(65536) and not stopping.is_set():
                        if behaviour == "nested":
                            self.request.sendall(b"*1\r\n" * 100_000 + b":1\r\n")
                        else:
                            stopping.wait(30)

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.parametrize(
    ("behaviour", "reason"), [("nested", BoundReason.TOO_DEEP), ("never", BoundReason.TIMED_OUT)]
)
def test_a_server_answering_past_the_bounds_is_a_queue_error_naming_the_bound(
    behaviour: str, reason: str
) -> None:
    server = HostileRedis(behaviour)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        read = _read_list(f"127.0.0.1:{server.server_address[1]}", "jobs")
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert isinstance(read, QueueUnreachableError), read
    assert read.reason == reason, read
