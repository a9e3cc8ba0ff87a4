"""Depth sources of many pools share one client per queue server, against a real Redis; what a Redis
answers is read within the operator's bounds."""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import redis

from devenv.servers import RabbitMQServer, RedisServer
from e2e.autoscaled_pools import RabbitMQBacklog
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Queue, RabbitMQ, RedisList, RedisStream
from workerfleet.backends.base import QueueSample, QueueUnreachableError
from workerfleet.backends.bounds import BoundReason
from workerfleet.backends.enqueue import enqueue
from workerfleet.backends.held import HeldSample, read_held
from workerfleet.backends.rabbitmq import RabbitMQDepth
from workerfleet.backends.redis_common import shared_clients
from workerfleet.backends.redis_list import RedisListDepth
from workerfleet.backends.redis_replies import MAX_REDIS_REPLY_BYTES
from workerfleet.backends.redis_stream import RedisStreamDepth

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


def _commands(data: bytes) -> list[bytes]:
    """The names of the RESP commands in `data` (arrays of bulk strings, as clients send them)."""
    names, lines = [], data.split(b"\r\n")
    index = 0
    while index < len(lines) and lines[index].startswith(b"*"):
        count = int(lines[index][1:])
        names.append(lines[index + 2].upper())
        index += 1 + 2 * count
    return names


def _not_a_count(command: bytes) -> bytes:
    """Handshake answers a client accepts, then a word where every count should be."""
    if command == b"HELLO":
        return b"-ERR unknown command 'HELLO'\r\n"
    if command == b"CLIENT":
        return b"+OK\r\n"
    return b"+many\r\n"


class HostileRedis(socketserver.ThreadingTCPServer):
    """A 'Redis' on loopback answering every command with arrays nested 100,000 deep, with words where
    counts should be, or never."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: str) -> None:
        stopping = self.stopping = threading.Event()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    while (data := self.request.recv(65536)) and not stopping.is_set():
                        if behaviour == "nested":
                            self.request.sendall(b"*1\r\n" * 100_000 + b":1\r\n")
                        elif behaviour == "words":
                            self.request.sendall(b"".join(map(_not_a_count, _commands(data))))
                        else:
                            stopping.wait(30)

        super().__init__(("127.0.0.1", 0), Handler)


Server = TypeVar("Server", "HostileRedis", "HostileAmqp")


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    """The stand-in answering on loopback for the block; its handlers released and its thread ended after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("behaviour", "reason"), [("nested", BoundReason.TOO_DEEP), ("never", BoundReason.TIMED_OUT)]
)
def test_a_server_answering_past_the_bounds_is_a_queue_error_naming_the_bound(
    behaviour: str, reason: str
) -> None:
    with serving(HostileRedis(behaviour)) as server:
        read = _read_list(f"127.0.0.1:{server.server_address[1]}", "jobs")
    assert isinstance(read, QueueUnreachableError), read
    assert read.reason == reason, read


def _nested_start_frame(depth: int) -> bytes:
    """Connection.Start whose server properties nest `depth` tables deep (AMQP 0-9-1 field tables)."""
    table = b""
    for _ in range(depth):
        entry = b"\x01t" + b"F" + len(table).to_bytes(4, "big") + table
        table = entry
    properties = len(table).to_bytes(4, "big") + table
    mechanisms = b"PLAIN"
    locales = b"en_US"
    payload = (
        (10).to_bytes(2, "big")
        + (10).to_bytes(2, "big")
        + b"\x00\x09"
        + properties
        + len(mechanisms).to_bytes(4, "big")
        + mechanisms
        + len(locales).to_bytes(4, "big")
        + locales
    )
    return b"\x01\x00\x00" + len(payload).to_bytes(4, "big") + payload + b"\xce"


class HostileAmqp(socketserver.ThreadingTCPServer):
    """An 'AMQP broker' on loopback answering the protocol header with a frame that announces 2 GiB and
    sends up to 200 MB of it, with server properties nested 5,000 deep, or never; `sent` counts the
    bytes the reader took."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: str) -> None:
        stopping = self.stopping = threading.Event()
        self.sent = 0
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    self.request.recv(8)  # b"AMQP\x00\x00\x09\x01"
                    if behaviour == "never":
                        stopping.wait(30)
                        return
                    if behaviour == "nested":
                        self.request.sendall(_nested_start_frame(5_000))
                        stopping.wait(30)
                        return
                    self.request.sendall(b"\x01\x00\x00" + (2**31 - 1).to_bytes(4, "big"))
                    while server.sent < HUGE_AMQP_BYTES and not stopping.is_set():
                        self.request.sendall(PADDING)
                        server.sent += len(PADDING)

        super().__init__(("127.0.0.1", 0), Handler)


HUGE_AMQP_BYTES = 200 * 2**20
PADDING = b"\x00" * 65536


def _read_rabbitmq(address: str, queue: str) -> QueueSample | QueueUnreachableError:
    async def read() -> QueueSample | QueueUnreachableError:
        source = RabbitMQDepth(RabbitMQ.model_validate({"address": address, "queue": queue}), Credentials())
        try:
            return await source.read()
        except QueueUnreachableError as error:
            return error
        finally:
            await source.close()

    return asyncio.run(read())


@pytest.mark.parametrize("kind", ["list", "stream"])
def test_a_server_answering_words_for_counts_is_a_queue_error(kind: str) -> None:
    with serving(HostileRedis("words")) as server:
        address = f"127.0.0.1:{server.server_address[1]}"
        read = _read_list(address, "jobs") if kind == "list" else _read_stream(address, "jobs")
    assert isinstance(read, QueueUnreachableError), read
    assert "not a count" in str(read), read


def _read_stream(address: str, stream: str) -> QueueSample | QueueUnreachableError:
    async def read() -> QueueSample | QueueUnreachableError:
        spec = {"address": address, "stream": stream, "consumerGroup": "workers"}
        source = RedisStreamDepth(RedisStream.model_validate(spec), Credentials())
        try:
            return await source.read()
        except QueueUnreachableError as error:
            return error
        finally:
            await source.close()

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("oversized", BoundReason.TOO_LARGE),
        ("nested", BoundReason.TOO_DEEP),
        ("never", BoundReason.TIMED_OUT),
    ],
)
def test_an_amqp_endpoint_answering_past_the_bounds_is_a_queue_error_naming_the_bound(
    behaviour: str, reason: str
) -> None:
    with serving(HostileAmqp(behaviour)) as server:
        read = _read_rabbitmq(f"127.0.0.1:{server.server_address[1]}", "jobs")
    assert isinstance(read, QueueUnreachableError), read
    assert (read.reason, server.sent < HUGE_AMQP_BYTES / 2) == (reason, True), (read, server.sent)


def test_a_rabbitmq_queue_is_read_within_the_bounds(rabbitmq_server: RabbitMQServer) -> None:
    backlog = RabbitMQBacklog(rabbitmq_server)
    backlog.push(7)
    try:
        read = _read_rabbitmq(rabbitmq_server.address, backlog.name)
        missing = _read_rabbitmq(rabbitmq_server.address, "no-such-queue")
    finally:
        backlog.drain()
    assert isinstance(read, QueueSample), read
    assert read.depth == 7
    assert isinstance(missing, QueueUnreachableError), missing
    assert "does not exist" in str(missing)


def test_a_scheduled_publish_and_the_held_counts_reach_a_real_rabbitmq(
    rabbitmq_server: RabbitMQServer,
) -> None:
    # Given a pool's queue and a review queue with two jobs on a real RabbitMQ
    jobs, review = RabbitMQBacklog(rabbitmq_server), RabbitMQBacklog(rabbitmq_server)
    jobs.create()
    review.push(2)
    queue = Queue.model_validate(jobs.queue_spec)

    # When the operator publishes a scheduled job and reads the review and dead-letter depths
    async def publish_then_count() -> HeldSample | None:
        await enqueue(queue, Credentials(), b'{"id": "nightly"}')
        return await read_held(queue, Credentials(), [review.name], [f"{jobs.name}.dlq"])

    try:
        held = asyncio.run(publish_then_count())
        read = _read_rabbitmq(rabbitmq_server.address, jobs.name)
    finally:
        jobs.drain()
        review.drain()

    # Then the job is on the queue, and the counts are the server's
    assert isinstance(read, QueueSample), read
    assert read.depth == 1
    assert held is not None
    assert (held.review_depth, held.dead_letter_depth) == (2, 0), held


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("oversized", BoundReason.TOO_LARGE), ("never", BoundReason.TIMED_OUT)],
)
def test_held_counts_and_publishes_to_a_hostile_amqp_endpoint_fail_naming_the_bound(
    behaviour: str, reason: str
) -> None:
    async def attempt(step: Coroutine[Any, Any, object]) -> QueueUnreachableError | None:
        try:
            await step
        except QueueUnreachableError as error:
            return error
        return None

    with serving(HostileAmqp(behaviour)) as server:
        queue = Queue.model_validate(
            {"rabbitmq": {"address": f"127.0.0.1:{server.server_address[1]}", "queue": "jobs"}}
        )
        counted = asyncio.run(attempt(read_held(queue, Credentials(), ["jobs.review"], ["jobs.dlq"])))
        published = asyncio.run(attempt(enqueue(queue, Credentials(), b"{}")))
    assert counted is not None
    assert counted.reason == reason, counted
    assert published is not None
    assert published.reason == reason, published
