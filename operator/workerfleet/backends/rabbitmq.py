"""Depth of a RabbitMQ queue: its ready messages and those of its priority levels' queues
(`<queue>.priority.high|low`, where they exist), read with passive declares over AMQP.

What RabbitMQ can give over AMQP is queue.declare-ok's message_count (ready messages) and
consumer_count; messages_unacknowledged is only in the management HTTP API (a plugin, another port,
other credentials), which the WorkerPool API does not name. So:
- in flight (delivered, not acknowledged) is left out; it is bounded by replicas x prefetch, and exists
  only while workers run. When a pool goes from one worker to zero, that worker drains: what it cannot
  finish goes back to ready, which wakes the pool again;
- retries waiting for their backoff sit in `<queue>.retry.<ms>ms` queues, which AMQP cannot list; they
  are left out too, but unlike Redis's delayed sets the broker itself moves them back onto the queue
  when due (message TTL + dead-lettering), so they wake a sleeping pool and are never stranded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from workerfleet.api.common import split_host_port
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import Priority
from workerfleet.api.workerpool import RabbitMQ
from workerfleet.backends.base import QueueSample, QueueUnreachableError
from workerfleet.backends.bounds import ANSWER_TIMEOUT_SECONDS
from workerfleet.planners.priority import LEVELS, RABBITMQ_SEPARATOR, level_queue
from workerfleet.tls import client_context

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection


class RabbitMQDepth:
    def __init__(self, queue: RabbitMQ, credentials: Credentials) -> None:
        self._queue = queue
        self._credentials = credentials
        self._connection: AbstractRobustConnection | None = None

    def url(self) -> str:
        """The AMQP URL, credentials included: never to be logged."""
        host, port = split_host_port(self._queue.address)
        user = quote(self._credentials.username or "guest", safe="")
        password = quote(self._credentials.password or "guest", safe="")
        scheme = "amqps" if self._queue.tls is not None else "amqp"
        return f"{scheme}://{user}:{password}@{host}:{port}/{quote(self._queue.vhost, safe='')}"

    def _what(self) -> str:
        return f"rabbitmq queue {self._queue.queue!r}"

    async def read(self) -> QueueSample:
        # Imported on the first read: the AMQP client is 8 MiB of memory, for pools on RabbitMQ only.
        import aio_pika  # noqa: PLC0415
        from aiormq.exceptions import AMQPError, ChannelNotFoundEntity  # noqa: PLC0415

        from workerfleet.backends.amqp_transport import (  # noqa: PLC0415
            BoundedRobustConnection,
            amqp_failure,
        )

        try:
            if self._connection is None or self._connection.is_closed:
                context = (
                    client_context(self._credentials.ca_pem, self._queue.tls.server_name)
                    if self._queue.tls is not None
                    else None
                )
                self._connection = await aio_pika.connect_robust(
                    self.url(),
                    timeout=ANSWER_TIMEOUT_SECONDS,
                    ssl_context=context,
                    connection_class=BoundedRobustConnection,
                )
            async with self._connection.channel() as channel:
                declared = await channel.declare_queue(
                    self._queue.queue, passive=True, timeout=ANSWER_TIMEOUT_SECONDS
                )
                count = int(declared.declaration_result.message_count or 0)
            for level in (level for level in LEVELS if level != Priority.NORMAL):
                name = level_queue(self._queue.queue, level, RABBITMQ_SEPARATOR)
                try:
                    # A channel each: a passive declare of a missing queue closes its channel.
                    async with self._connection.channel() as channel:
                        found = await channel.declare_queue(
                            name, passive=True, timeout=ANSWER_TIMEOUT_SECONDS
                        )
                        count += int(found.declaration_result.message_count or 0)
                except ChannelNotFoundEntity:
                    continue  # no JobType of this level has been served yet
        except ChannelNotFoundEntity as error:
            raise QueueUnreachableError(
                f"{self._what()} does not exist in vhost {self._queue.vhost!r}:"
                " declare it, or correct spec.queue.rabbitmq.queue"
            ) from error
        except (AMQPError, OSError, TimeoutError, RecursionError) as error:
            await self.close()
            raise amqp_failure(self._what(), error) from error
        return QueueSample(depth=count)

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()
