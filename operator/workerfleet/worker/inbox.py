"""Looking into and moving jobs between a pool's queues from outside the workers: the review inbox and the
dead-letter queues, for `kubectl workerfleet review|dlq` and the producer API.

One small interface (`Inbox`) on all three backends. `browse` reads a queue without taking anything off
it; `transfer` moves one job it showed to another queue (or drops it), in one step the server carries
out whole or not at all, so a caller killed at any moment neither loses a job nor leaves it in two
queues:

- Redis list and stream: one script checks the job is still there, writes it to the destination, then
  removes it (LPUSH/LREM; XADD/XDEL). A job another caller moved meanwhile is reported gone.
- RabbitMQ: a browsed message stays unacknowledged on this caller's channel; a move publishes the copy
  and acknowledges the original in one AMQP transaction (tx.select/commit). A caller that dies before
  the commit leaves neither the copy nor the acknowledgement: the broker requeues the original.
  Closing gives back every message browsed and not moved, in its place.

None of this touches the workers' receive and settle path (`backend.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractTransaction,
)
from redis.asyncio import Redis

from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import Priority
from workerfleet.api.queue_kinds import kind_of, rabbitmq, redis_list, redis_stream
from workerfleet.api.workerpool import Queue, RabbitMQ, RedisList, RedisStream
from workerfleet.planners.priority import RABBITMQ_SEPARATOR, REDIS_SEPARATOR, level_queue
from workerfleet.tls import client_context
from workerfleet.worker.backend import BackendUnavailable
from workerfleet.worker.rabbitmq import (
    CONNECT_TIMEOUT_SECONDS,
    GUEST,
    _unavailable_on_connection_errors,
    delay_queue,
    quantized_delay_ms,
)
from workerfleet.worker.redis_stream import JOB_FIELD
from workerfleet.worker.redis_support import redis_client, split_host_port, unavailable_on_connection_errors
from workerfleet.worker.settings import ConfigurationError

BROWSE_MAX = 10_000
"""The most jobs one browse reads from a queue: the commands page no further."""


@dataclass(frozen=True)
class Held:
    """One job as it sits in `queue`, and the backend's handle to move exactly that one."""

    queue: str
    body: bytes
    handle: object


class Inbox(Protocol):
    """The review and dead-letter queues of one pool's server. Connection trouble raises
    BackendUnavailable."""

    async def connect(self) -> None: ...

    async def close(self) -> None:
        """Give back what was browsed and not moved, and disconnect."""

    async def browse(self, queue: str, limit: int) -> Sequence[Held]:
        """Up to `limit` jobs of `queue`, oldest first, left in place."""

    async def transfer(self, held: Held, destination: str | None, body: bytes) -> bool:
        """Put `body` on `destination` (dropped when None) and take `held` off its queue, as one step;
        False, with nothing written, when `held` is no longer there."""

    async def depth(self, queue: str) -> int:
        """How many jobs `queue` holds (0 when it does not exist)."""

    async def enqueue_later(self, queue: str, body: bytes, due: datetime) -> None:
        """Put `body` on `queue` (the pool's own) once `due` comes: where the workers keep retries
        waiting for their backoff, which they move onto the queue when due."""

    async def completed(self, key: str) -> bool | None:
        """Whether a job with idempotency key `key` (`<type>:<value>`) completed within its TTL; None when
        this server cannot tell (RabbitMQ without an idempotencyStore)."""


# KEYS[1]: the list holding the job; KEYS[2]: the destination list. ARGV: the job as held, the body to
# write, "lpush" or "none". The oldest copy of the job goes (LREM from the tail: lists are LPUSHed).
TRANSFER_FROM_LIST = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
if ARGV[3] == 'lpush' then redis.call('LPUSH', KEYS[2], ARGV[2]) end
redis.call('LREM', KEYS[1], -1, ARGV[1])
return 1
"""

# KEYS[1]: the stream holding the entry; KEYS[2]: the destination stream. ARGV: the entry id, the body,
# "xadd" or "none".
TRANSFER_FROM_STREAM = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return 0 end
if ARGV[3] == 'xadd' then redis.call('XADD', KEYS[2], '*', 'job', ARGV[2]) end
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


class _RedisInbox:
    """What the list and stream inboxes share: the client, the completed keys (`<queue>:done:<key>`)."""

    _transfer_script: str

    def __init__(self, address: str, database: int, credentials: Credentials, tls: Any, key: str) -> None:
        self._key = key
        self._redis: Redis = redis_client(address, database, credentials, tls)
        self._transfer = self._redis.register_script(self._transfer_script)

    async def connect(self) -> None:
        with unavailable_on_connection_errors():
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

    async def completed(self, key: str) -> bool | None:
        with unavailable_on_connection_errors():
            return bool(await self._redis.exists(f"{self._key}:done:{key}"))

    async def enqueue_later(self, queue: str, body: bytes, due: datetime) -> None:
        # `<queue>:delayed`, scored by due time in ms: a running worker's upkeep promotes it when due.
        with unavailable_on_connection_errors():
            await self._redis.zadd(f"{queue}:delayed", {body: int(due.timestamp() * 1000)})

    async def _run_transfer(self, held: Held, destination: str | None, body: bytes, how: str) -> bool:
        keys = [held.queue, destination or held.queue]
        handle: Any = held.handle  # the job as stored (list) or the entry id (stream)
        with unavailable_on_connection_errors():
            moved: int = await self._transfer(keys=keys, args=[handle, body, how if destination else "none"])
        return moved == 1


class RedisListInbox(_RedisInbox):
    _transfer_script = TRANSFER_FROM_LIST

    def __init__(self, queue: RedisList, credentials: Credentials) -> None:
        super().__init__(queue.address, queue.database, credentials, queue.tls, queue.list_key)

    async def browse(self, queue: str, limit: int) -> Sequence[Held]:
        with unavailable_on_connection_errors():
            bodies: list[Any] = await self._redis.lrange(queue, -min(limit, BROWSE_MAX), -1)
        return [Held(queue, body, body) for body in reversed(bodies)]

    async def transfer(self, held: Held, destination: str | None, body: bytes) -> bool:
        return await self._run_transfer(held, destination, body, "lpush")

    async def depth(self, queue: str) -> int:
        with unavailable_on_connection_errors():
            return int(await self._redis.llen(queue))


class RedisStreamInbox(_RedisInbox):
    _transfer_script = TRANSFER_FROM_STREAM

    def __init__(self, queue: RedisStream, credentials: Credentials) -> None:
        super().__init__(queue.address, queue.database, credentials, queue.tls, queue.stream)

    async def browse(self, queue: str, limit: int) -> Sequence[Held]:
        with unavailable_on_connection_errors():
            entries: Any = await self._redis.xrange(queue, count=min(limit, BROWSE_MAX))
        return [Held(queue, (fields or {}).get(JOB_FIELD, b""), entry_id) for entry_id, fields in entries]

    async def transfer(self, held: Held, destination: str | None, body: bytes) -> bool:
        return await self._run_transfer(held, destination, body, "xadd")

    async def depth(self, queue: str) -> int:
        with unavailable_on_connection_errors():
            return int(await self._redis.xlen(queue))


class RabbitMQInbox:
    """Browsed messages stay unacknowledged on one transactional channel until moved or closed."""

    def __init__(
        self, queue: RabbitMQ, credentials: Credentials, store_credentials: Credentials | None = None
    ) -> None:
        self._settings = queue
        self._credentials = credentials
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._transaction: AbstractTransaction | None = None
        self._browsed: set[str] = set()
        store = queue.idempotency_store
        self._store: Redis | None = (
            redis_client(store.address, store.database, store_credentials or Credentials(), store.tls)
            if store is not None
            else None
        )
        self._store_prefix = (store.key_prefix or f"{queue.queue}:done:") if store is not None else ""

    async def connect(self) -> None:
        host, port = split_host_port(self._settings.address)
        tls = self._settings.tls
        with _unavailable_on_connection_errors():
            self._connection = await aio_pika.connect(
                host=host,
                port=port,
                login=self._credentials.username or GUEST,
                password=self._credentials.password or GUEST,
                virtualhost=self._settings.vhost,
                timeout=CONNECT_TIMEOUT_SECONDS,
                ssl=tls is not None,
                ssl_context=client_context(self._credentials.ca_pem, tls.server_name) if tls else None,
            )
            self._channel = await self._connection.channel(publisher_confirms=False)
            self._transaction = self._channel.transaction()
            await self._transaction.select()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            # Closing the channel requeues every browsed message not moved, in its place.
            await connection.close()
        if self._store is not None:
            await self._store.aclose()

    def _live(self) -> tuple[AbstractConnection, AbstractChannel, AbstractTransaction]:
        if self._connection is None or self._channel is None or self._transaction is None:
            raise BackendUnavailable("rabbitmq: not connected")
        return self._connection, self._channel, self._transaction

    async def _existing(self, name: str) -> AbstractQueue | None:
        """The queue, or None when it does not exist (probed on a channel of its own: a passive declare
        of a missing queue closes its channel)."""
        connection, channel, _ = self._live()
        probe = await connection.channel(publisher_confirms=False)
        try:
            await probe.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            if not probe.is_closed:
                await probe.close()
        return await channel.declare_queue(name, passive=True)

    async def browse(self, queue: str, limit: int) -> Sequence[Held]:
        if queue in self._browsed:
            raise ConfigurationError(f"queue {queue} was browsed already in this session")
        with _unavailable_on_connection_errors():
            found = await self._existing(queue)
            if found is None:
                return []
            self._browsed.add(queue)
            held: list[Held] = []
            while len(held) < min(limit, BROWSE_MAX):
                message = await found.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(Held(queue, message.body, message))
        return held

    async def transfer(self, held: Held, destination: str | None, body: bytes) -> bool:
        _, channel, transaction = self._live()
        message = held.handle
        assert isinstance(message, AbstractIncomingMessage)
        with _unavailable_on_connection_errors():
            if destination is not None:
                if await self._existing(destination) is None:
                    await channel.declare_queue(destination, durable=True)
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"
                    ),
                    routing_key=destination,
                )
            await message.ack()
            await transaction.commit()
        return True

    async def enqueue_later(self, queue: str, body: bytes, due: datetime) -> None:
        # A delay queue whose TTL dead-letters the message onto `queue` when due (the delay rounded up to
        # two significant digits, as the workers' retries are).
        _, channel, transaction = self._live()
        seconds = (due - datetime.now(UTC)).total_seconds()
        waiting, arguments = delay_queue(queue, quantized_delay_ms(max(seconds, 0.001)))
        with _unavailable_on_connection_errors():
            # The broker drops a due message whose queue is missing (a priority level's queue no worker
            # has declared yet): declared here as a worker would.
            if await self._existing(queue) is None:
                await channel.declare_queue(queue, durable=True)
            await channel.declare_queue(waiting, durable=True, arguments=arguments)
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"
                ),
                routing_key=waiting,
            )
            await transaction.commit()

    async def depth(self, queue: str) -> int:
        with _unavailable_on_connection_errors():
            found = await self._existing(queue)
            if found is None:
                return 0
            declared = found.declaration_result
            return int(declared.message_count or 0) if declared is not None else 0

    async def completed(self, key: str) -> bool | None:
        if self._store is None:
            return None
        with unavailable_on_connection_errors():
            return bool(await self._store.exists(self._store_prefix + key))


INBOXES: Mapping[str, Callable[[Any, Credentials, Credentials | None], Inbox]] = {
    redis_list.KIND.name: lambda queue, credentials, _: RedisListInbox(queue, credentials),
    redis_stream.KIND.name: lambda queue, credentials, _: RedisStreamInbox(queue, credentials),
    rabbitmq.KIND.name: RabbitMQInbox,
}
"""Each queue kind's inbox, by the kind's name."""


def open_inbox(queue: Queue, credentials: Credentials, store_credentials: Credentials | None = None) -> Inbox:
    kind, backend = kind_of(queue)
    opener = INBOXES.get(kind.name)
    if opener is None:
        raise ConfigurationError(
            f"queue.{kind.name} only tells the operator the queue's depth; its review and dead-letter "
            "queues are not on a server workerfleet consumes"
        )
    return opener(backend, credentials, store_credentials)


def main_queue_name(queue: Queue) -> str:
    """The pool's own queue: where approved and replayed jobs go."""
    kind, backend = kind_of(queue)
    name = kind.queue_name(backend)
    if name is None:
        raise ConfigurationError(f"queue.{kind.name} names no queue workerfleet can write to")
    return name


def level_queue_name(queue: Queue, level: Priority) -> str:
    """Where jobs of a JobType with priority `level` go on the pool's server (see
    `workerfleet.planners.priority`): the pool's own queue for normal."""
    kind, _ = kind_of(queue)
    separator = RABBITMQ_SEPARATOR if kind.name == rabbitmq.KIND.name else REDIS_SEPARATOR
    return level_queue(main_queue_name(queue), level, separator)
