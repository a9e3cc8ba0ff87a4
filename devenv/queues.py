"""One view per backend of a queue under test: how workers are pointed at it, how tests fill it and
look into it. Every test gets fresh queue names, so tests sharing a server cannot see each other's jobs."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import redis

from devenv.servers import RabbitMQServer
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Queue
from workerfleet.worker.backend import QueueBackend
from workerfleet.worker.envelope import Envelope, MessageLimits, decode
from workerfleet.worker.rabbitmq import RabbitMQBackend
from workerfleet.worker.redis_list import RedisListBackend
from workerfleet.worker.redis_stream import RedisStreamBackend
from workerfleet.worker.settings import MAX_MESSAGE_BYTES

HEARTBEAT_SECONDS = 1.5
READ_BACK_LIMITS = MessageLimits(max_bytes=MAX_MESSAGE_BYTES)
"""Dead letters keep up to a worker's size bound of the original message, encoded (base64 adds a third):
a test reads them back within the largest bound a worker may have."""


class QueueUnderTest(Protocol):
    name: str
    """The pool's queue; dead letters go to `<name>.dlq`, review items to `<name>.review`."""

    def spec(self) -> dict[str, Any]:
        """The WorkerPool .spec.queue pointing at this queue."""

    def producer(self) -> QueueBackend:
        """A backend that only enqueues."""

    def entries(self, queue: str) -> list[Envelope]:
        """What sits in a dead-letter or review queue (or the pool's own), oldest first."""

    def held(self) -> int:
        """Jobs claimed by some worker and not settled."""


def _bodies_to_envelopes(bodies: list[bytes]) -> list[Envelope]:
    return [decode(body, READ_BACK_LIMITS) for body in bodies]


@dataclass
class RedisListQueue:
    address: str
    name: str

    def spec(self) -> dict[str, Any]:
        return {"redis": {"address": self.address, "list": self.name}}

    def producer(self) -> QueueBackend:
        queue = Queue.model_validate(self.spec()).redis
        assert queue is not None
        return RedisListBackend(queue, Credentials(), f"producer-{uuid.uuid4().hex[:6]}", HEARTBEAT_SECONDS)

    def _client(self) -> redis.Redis:
        host, port = self.address.split(":")
        return redis.Redis(host=host, port=int(port))

    def entries(self, queue: str) -> list[Envelope]:
        with self._client() as client:
            # Producers push on the left, so the oldest entry is the rightmost.
            return _bodies_to_envelopes(list(reversed(client.lrange(queue, 0, -1))))

    def held(self) -> int:
        with self._client() as client:
            keys = list(client.scan_iter(match=f"{self.name}:processing:*"))
            return sum(int(client.llen(key)) for key in keys)


@dataclass
class RedisStreamQueue:
    address: str
    name: str

    def spec(self) -> dict[str, Any]:
        return {"redisStream": {"address": self.address, "stream": self.name, "consumerGroup": "workers"}}

    def producer(self) -> QueueBackend:
        queue = Queue.model_validate(self.spec()).redis_stream
        assert queue is not None
        return RedisStreamBackend(
            queue, Credentials(), "producer", reclaim_idle_seconds=60, reclaim_interval_seconds=60
        )

    def _client(self) -> redis.Redis:
        host, port = self.address.split(":")
        return redis.Redis(host=host, port=int(port))

    def entries(self, queue: str) -> list[Envelope]:
        with self._client() as client:
            if queue == self.name:  # the pool's own stream: only what the group has not delivered yet
                groups: Any = client.xinfo_groups(queue)
                last = groups[0]["last-delivered-id"].decode()
                found: Any = client.xrange(queue, min=f"({last}")
            else:
                found = client.xrange(queue)
            return _bodies_to_envelopes([fields[b"job"] for _id, fields in found])

    def held(self) -> int:
        with self._client() as client:
            summary: Any = client.xpending(self.name, "workers")
            return int(summary["pending"])


@dataclass
class RabbitMQQueue:
    address: str
    name: str
    server: RabbitMQServer
    store: str | None = None
    """Address of a Redis the pool records completed idempotency keys in (idempotencyStore)."""

    def spec(self) -> dict[str, Any]:
        store = {"idempotencyStore": {"address": self.store}} if self.store is not None else {}
        return {"rabbitmq": {"address": self.address, "queue": self.name, **store}}

    def producer(self) -> QueueBackend:
        queue = Queue.model_validate(self.spec()).rabbitmq
        assert queue is not None
        return RabbitMQBackend(queue, Credentials(), prefetch=1)

    def _connect(self) -> Any:
        host, port = self.address.split(":")
        return aio_pika.connect(host=host, port=int(port), timeout=5)

    def entries(self, queue: str) -> list[Envelope]:
        """Ready messages, read without acknowledging: closing the channel puts them back."""

        async def read() -> list[bytes]:
            connection = await self._connect()
            try:
                channel = await connection.channel()
                try:
                    declared = await channel.declare_queue(queue, passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    return []
                bodies = []
                while (message := await declared.get(no_ack=False, fail=False)) is not None:
                    bodies.append(message.body)
                return bodies
            finally:
                await connection.close()

        return _bodies_to_envelopes(asyncio.run(read()))

    def held(self) -> int:
        return self.server.unacknowledged(self.name)


def describe(envelopes: list[Envelope]) -> list[tuple[str, str | None]]:
    """(job id, lastFailure reason) per envelope, for assertions that read well."""
    return [
        (envelope.id, envelope.last_failure.reason if envelope.last_failure else None)
        for envelope in envelopes
    ]


def jobs_in(log_text: str) -> list[dict[str, Any]]:
    """The probe handlers' start/finish records."""
    return [json.loads(line) for line in log_text.splitlines() if line.strip()]
