"""Put one job on a pool's queue from the operator (a scheduled JobType's run), the way the workers'
producers do, onto the queue of the JobType's priority level: LPUSH onto a Redis list, XADD (field
`job`) onto a Redis stream, a persistent publish with confirms onto a RabbitMQ queue."""

from __future__ import annotations

from redis import exceptions as redis_errors

from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import Priority
from workerfleet.api.queue_kinds import kind_of, rabbitmq, redis_list, redis_stream
from workerfleet.api.workerpool import Queue, RabbitMQ
from workerfleet.backends.base import QueueUnreachableError, failure
from workerfleet.backends.bounds import ANSWER_TIMEOUT_SECONDS
from workerfleet.backends.rabbitmq import RabbitMQDepth
from workerfleet.backends.redis_common import connect, release
from workerfleet.planners.priority import RABBITMQ_SEPARATOR, level_queue
from workerfleet.tls import client_context


async def _publish(queue: RabbitMQ, credentials: Credentials, body: bytes, routing_key: str) -> None:
    import aio_pika  # noqa: PLC0415  (the AMQP client is large: loaded for RabbitMQ pools only)
    from aiormq.exceptions import AMQPError, ChannelNotFoundEntity  # noqa: PLC0415

    from workerfleet.backends.amqp_transport import amqp_failure, connect_bounded  # noqa: PLC0415

    context = client_context(credentials.ca_pem, queue.tls.server_name) if queue.tls is not None else None
    try:
        connection = await connect_bounded(RabbitMQDepth(queue, credentials).url(), context)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            if routing_key != queue.queue:
                # A priority level's queue is declared by the pool's workers; before any ran, by whoever
                # first puts a job there (as they would: durable, no arguments). A passive declare of a
                # missing queue closes its channel, so it gets one of its own.
                try:
                    async with connection.channel() as probe:
                        await probe.declare_queue(routing_key, passive=True, timeout=ANSWER_TIMEOUT_SECONDS)
                except ChannelNotFoundEntity:
                    await channel.declare_queue(routing_key, durable=True, timeout=ANSWER_TIMEOUT_SECONDS)
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"
                ),
                routing_key=routing_key,
                timeout=ANSWER_TIMEOUT_SECONDS,
            )
        finally:
            await connection.close()
    except (AMQPError, OSError, TimeoutError, RecursionError) as error:
        raise amqp_failure(f"rabbitmq queue {routing_key!r}", error) from error


async def enqueue(
    queue: Queue, credentials: Credentials, body: bytes, level: Priority = Priority.NORMAL
) -> None:
    """`body` onto the pool's queue of the JobType's priority `level`; QueueUnreachableError when the
    server does not take it."""
    kind, backend = kind_of(queue)
    if kind.name == rabbitmq.KIND.name:
        await _publish(backend, credentials, body, level_queue(backend.queue, level, RABBITMQ_SEPARATOR))
        return
    if kind.name not in (redis_list.KIND.name, redis_stream.KIND.name):
        raise QueueUnreachableError(f"queue.{kind.name} is not a queue the operator can write to")
    client = connect(backend.address, backend.database, credentials, tls=backend.tls)
    try:
        if kind.name == redis_list.KIND.name:
            await client.lpush(level_queue(backend.list_key, level), body)
        else:
            await client.xadd(level_queue(backend.stream, level), {"job": body})
    except (redis_errors.RedisError, OSError) as error:
        raise QueueUnreachableError(f"{kind.describe(backend)}: {failure(error)}") from error
    finally:
        await release(client)
