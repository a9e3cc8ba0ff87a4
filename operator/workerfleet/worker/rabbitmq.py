"""RabbitMQ backend over AMQP 0-9-1: manual acknowledgement, prefetch equal to concurrency.

The broker keeps a delivered message unacknowledged until the worker settles it; when the worker's
connection drops (SIGKILL, lost node) the broker requeues it for another worker. Retries wait in a delay
queue `<queue>.retry.<ms>ms` whose message TTL dead-letters them back onto the queue when due (delays are
rounded up to two significant digits, so few such queues exist; each deletes itself when unused).
Dead-letter and review queues are durable queues published to through the default exchange, with
publisher confirms, before the original is acknowledged. A publish the broker does not confirm (nacked,
say by a full queue with overflow reject-publish, or returned as unroutable because the queue vanished)
raises DestinationRefused and leaves the original unacknowledged.

Crash counting (Delivery.deliveries), without any store besides the broker: a quorum queue counts
redeliveries itself (`x-delivery-count`). A classic queue only flags a redelivery (`redelivered`), so a
worker that receives a redelivered message publishes a copy carrying `x-workerfleet-deliveries` (the
deliveries so far) and acknowledges the original, without running it; the copy is what runs, and counts
on from there. Giving a job back on shutdown also publishes such a copy (with the count unchanged)
instead of a nack, which would count as a redelivery. The copy goes to the end of the queue.

Idempotency keys: RabbitMQ has no key-value store. With `idempotencyStore` (a Redis server), a worker
records a completed job's key there (SET with the JobType's TTL) BEFORE it acknowledges the job, and
checks the store on every delivery of a keyed job: an acknowledgement lost to a broker restart or a
dead worker leaves the job to be delivered again, and whichever worker gets it finds the key and
acknowledges it without running it. The store also holds the claims on keys whose job is running
(`<prefix>claim/<type>:<key>`: a JobType name has no `/`, so a claim never meets a completed key), so
two copies delivered at once to two workers do not both run. Without a store, completed keys and
claims are each worker process's own (completed keys for the JobType's TTL): a redelivery or a second
copy to the same process is caught; one to another process is not.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pamqp.common import FieldTable
from redis.asyncio import Redis

from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import Priority
from workerfleet.api.workerpool import IdempotencyStore, RabbitMQ
from workerfleet.planners.priority import (
    RABBITMQ_SEPARATOR,
    level_queue,
    levels_served,
    take_order,
    turns,
    window,
)
from workerfleet.tls import client_context, tls_problem
from workerfleet.worker.backend import (
    BackendUnavailable,
    ClaimAnswer,
    CompletedKey,
    Delivery,
    DeliveryLost,
    DestinationRefused,
    KeyClaim,
    KeyState,
)
from workerfleet.worker.envelope import peek_job_type
from workerfleet.worker.redis_support import CLAIM_KEY, RELEASE_CLAIM, claim_in, redis_client, split_host_port
from workerfleet.worker.redis_support import unavailable_on_connection_errors as _store_unavailable

CONNECT_TIMEOUT_SECONDS = 10.0
DELIVERIES_HEADER = "x-workerfleet-deliveries"
BROKER_DELIVERY_COUNT = "x-delivery-count"
DELAY_QUEUE_EXPIRY_MARGIN_MS = 60_000
GUEST = "guest"


def quantized_delay_ms(delay_seconds: float) -> int:
    """The delay in ms, rounded up to two significant digits: 937 -> 940, 12_345 -> 13_000."""
    milliseconds = max(math.ceil(delay_seconds * 1000), 1)
    step = int(10 ** max(len(str(milliseconds)) - 2, 0))
    return math.ceil(milliseconds / step) * step


def delay_queue(queue: str, delay_ms: int) -> tuple[str, FieldTable]:
    """The delay queue for `delay_ms` in front of `queue`, and the arguments it is declared with (the
    same wherever it is declared: the broker refuses a redeclaration with other arguments)."""
    return f"{queue}.retry.{delay_ms}ms", {
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-expires": delay_ms + DELAY_QUEUE_EXPIRY_MARGIN_MS,
    }


def deliveries_of(message: AbstractIncomingMessage) -> int:
    """How often this job was handed out unsettled, this time included (see the module's docstring)."""
    headers = message.headers or {}
    carried = headers.get(DELIVERIES_HEADER)
    base = carried if isinstance(carried, int) and carried >= 1 else 1
    counted = headers.get(BROKER_DELIVERY_COUNT)
    if isinstance(counted, int):
        return base + counted
    return base + (1 if message.redelivered else 0)


def _counted_by_broker(message: AbstractIncomingMessage) -> bool:
    return isinstance((message.headers or {}).get(BROKER_DELIVERY_COUNT), int)


@dataclass(frozen=True)
class _Handle:
    connection_generation: int
    message: AbstractIncomingMessage
    queue: str
    """The queue (the pool's, or a priority level's) the message came from, and goes back to."""


def _handle(delivery: Delivery) -> _Handle:
    assert isinstance(delivery.handle, _Handle)
    return delivery.handle


@contextmanager
def _unavailable_on_connection_errors() -> Iterator[None]:
    try:
        yield
    except (aiormq.exceptions.AMQPConnectionError, ConnectionError, OSError, TimeoutError) as error:
        raise BackendUnavailable(
            f"rabbitmq: {tls_problem(error) or f'{type(error).__name__}: {error}'}"
        ) from error
    except aiormq.exceptions.ChannelInvalidStateError as error:
        raise BackendUnavailable(f"rabbitmq: channel closed: {error}") from error


class RabbitMQBackend:
    def __init__(
        self,
        queue: RabbitMQ,
        credentials: Credentials,
        prefetch: int,
        consumer_timeout_seconds: float | None = None,
        store_credentials: Credentials | None = None,
        *,
        levels: Mapping[str, Priority] | None = None,
    ) -> None:
        """`consumer_timeout_seconds`: asked of the broker as the consumer's x-consumer-timeout, so a long
        job does not get the channel closed under it (the broker's default is 30 minutes).
        `store_credentials`: for the queue's idempotencyStore, when it names one. `levels`: the priority
        of each JobType served (absent: normal)."""
        self._settings = queue
        self._queue_name = queue.queue
        self._levels = {name: level for name, level in (levels or {}).items() if level != Priority.NORMAL}
        self._served = levels_served((levels or {}).values())
        self._level_queues = [level_queue(queue.queue, level, RABBITMQ_SEPARATOR) for level in self._served]
        self._turn = 0
        self._credentials = credentials
        # Serving several levels, each level's consumer keeps a whole window of turns more than the
        # concurrency, so a level's jobs for the window are at hand when its turns come, not still on
        # their way from the broker after the previous ack (one job more was not enough on a busy host).
        self._prefetch = prefetch + len(window(self._served)) if len(self._served) > 1 else prefetch
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._generation = 0
        self._buffer: asyncio.Queue[tuple[str, AbstractIncomingMessage]] = asyncio.Queue()
        self._ready: dict[str, deque[AbstractIncomingMessage]] = {
            name: deque() for name in self._level_queues
        }
        self._known_queues: set[str] = set()
        self._completed: dict[str, float] = {}
        self._consumer_timeout_ms = (
            math.ceil(consumer_timeout_seconds * 1000) if consumer_timeout_seconds is not None else None
        )
        self._receiving = True
        self._store_settings: IdempotencyStore | None = queue.idempotency_store
        self._store_credentials = store_credentials or Credentials()
        self._store: Redis | None = None
        self._store_down = False
        self._store_prefix = (
            queue.idempotency_store.key_prefix or f"{queue.queue}:done:"
            if queue.idempotency_store is not None
            else ""
        )

    def _live_store(self) -> Redis | None:
        if self._store_settings is not None and self._store is None:
            self._store = redis_client(
                self._store_settings.address,
                self._store_settings.database,
                self._store_credentials,
                self._store_settings.tls,
            )
        return self._store

    async def _check_store(self) -> None:
        store = self._live_store()
        if store is None:
            return
        try:
            with _store_unavailable():
                await store.ping()
        except BackendUnavailable as error:
            raise BackendUnavailable(f"idempotency store: {error}") from error
        self._store_down = False

    @contextmanager
    def _store_call(self) -> Iterator[None]:
        """A call to the store; when it fails, receive() takes no more jobs until the store answers."""
        try:
            with _store_unavailable():
                yield
        except BackendUnavailable:
            self._store_down = True
            raise

    def _live_channel(self) -> AbstractChannel:
        if self._connection is None or self._connection.is_closed or self._channel is None:
            raise BackendUnavailable("rabbitmq: not connected")
        if self._channel.is_closed:
            raise BackendUnavailable("rabbitmq: channel closed")
        return self._channel

    async def connect(self) -> None:
        await self._disconnect()
        host, port = split_host_port(self._settings.address)
        with _unavailable_on_connection_errors():
            self._connection = await aio_pika.connect(
                host=host,
                port=port,
                login=self._credentials.username or GUEST,
                password=self._credentials.password or GUEST,
                virtualhost=self._settings.vhost,
                timeout=CONNECT_TIMEOUT_SECONDS,
                ssl=self._settings.tls is not None,
                ssl_context=(
                    client_context(self._credentials.ca_pem, self._settings.tls.server_name)
                    if self._settings.tls is not None
                    else None
                ),
            )
            self._generation += 1
            self._buffer = asyncio.Queue()
            self._ready = {name: deque() for name in self._level_queues}
            self._known_queues.clear()
            # on_return_raises: an unroutable publish (no such queue) is an error, not a silent drop.
            self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            await self._channel.set_qos(prefetch_count=self._prefetch)
            for name in self._level_queues:
                await self._ensure_queue(name)
        store = self._live_store()
        if store is not None:
            with self._store_call():
                await store.ping()
            self._store_down = False

    async def _start_consuming(self) -> None:
        """Subscribe on the first receive (one consumer per priority level's queue), so a producer that
        only enqueues never takes jobs."""
        arguments: FieldTable | None = (
            {"x-consumer-timeout": self._consumer_timeout_ms} if self._consumer_timeout_ms else None
        )
        for name in self._level_queues:
            with _unavailable_on_connection_errors():
                queue = await self._ensure_queue(name)
                tag = await queue.consume(
                    functools.partial(self._arrived, name), no_ack=False, arguments=arguments
                )
            self._consumers.append((queue, tag))

    async def _arrived(self, queue: str, message: AbstractIncomingMessage) -> None:
        await self._buffer.put((queue, message))

    async def _ensure_queue(self, name: str) -> AbstractQueue:
        """The named queue as it exists (whatever its arguments), else created durable."""
        assert self._connection is not None
        assert self._channel is not None
        # A passive declare of a missing queue closes its channel, so it gets a channel of its own.
        probe = await self._connection.channel(publisher_confirms=False)
        try:
            await probe.declare_queue(name, passive=True)
            exists = True
        except aiormq.exceptions.ChannelNotFoundEntity:
            exists = False
        finally:
            if not probe.is_closed:
                await probe.close()
        queue = await self._channel.declare_queue(name, passive=exists, durable=True)
        self._known_queues.add(name)
        return queue

    async def _disconnect(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()
        connection, self._connection, self._channel = self._connection, None, None
        self._consumers = []
        if connection is not None and not connection.is_closed:
            # Closing the connection requeues whatever it still holds unacknowledged.
            await connection.close()

    async def stop_receiving(self) -> None:
        """Cancel the consumer (basic.cancel), then give back what was prefetched and not handed out."""
        self._receiving = False
        with _unavailable_on_connection_errors():
            if self._connection is not None and not self._connection.is_closed:
                consumers, self._consumers = self._consumers, []
                for queue, tag in consumers:
                    await queue.cancel(tag)
            await self._give_back_buffered()

    async def _give_back_buffered(self) -> None:
        """Prefetched messages back to the queue, at once, each as a copy keeping its crash count (a nack
        would count as a redelivery), then acknowledged."""
        if self._channel is None or self._channel.is_closed:
            return  # the broker requeued them when the channel closed
        self._sort_arrivals()
        for queue, ready in self._ready.items():
            while ready:
                message = ready.popleft()
                await self._publish(queue, message.body, deliveries=deliveries_of(message))
                await message.ack()

    async def close(self) -> None:
        with _unavailable_on_connection_errors():
            if self._connection is not None and not self._connection.is_closed:
                await self.stop_receiving()
            await self._disconnect()

    async def receive(self, max_count: int, wait_seconds: float) -> Sequence[Delivery]:
        self._live_channel()
        if self._store_down:
            # Keyed jobs cannot be checked: take no more jobs until the store answers again.
            await self._check_store()
        if not self._receiving:
            return []
        if not self._consumers:
            await self._start_consuming()
        if not any(self._ready.values()):
            try:
                queue, first = await asyncio.wait_for(self._buffer.get(), timeout=wait_seconds)
            except TimeoutError:
                self._live_channel()  # a dropped connection shows up here, as silence
                return []
            self._ready[queue].append(first)
        deliveries: list[Delivery] = []
        for queue, message in self._by_turns(max_count):
            count = deliveries_of(message)
            if message.redelivered and not _counted_by_broker(message):
                # A classic queue cannot count: requeue a copy that carries the count, run that one.
                with _unavailable_on_connection_errors():
                    await self._publish(queue, message.body, deliveries=count)
                    await message.ack()
                continue
            deliveries.append(
                Delivery(
                    body=message.body, handle=_Handle(self._generation, message, queue), deliveries=count
                )
            )
        return deliveries

    def _sort_arrivals(self) -> None:
        while not self._buffer.empty():
            queue, message = self._buffer.get_nowait()
            self._ready[queue].append(message)

    def _by_turns(self, max_count: int) -> list[tuple[str, AbstractIncomingMessage]]:
        """Up to `max_count` of the messages at hand, by the turns of their priority levels; a turn whose
        level has none goes to the highest level that has one."""
        self._sort_arrivals()
        taken: list[tuple[str, AbstractIncomingMessage]] = []
        for turn in turns(self._served, self._turn, max_count):
            for level in take_order(self._served, turn):
                ready = self._ready[self._level_queues[self._served.index(level)]]
                if ready:
                    taken.append((self._level_queues[self._served.index(level)], ready.popleft()))
                    break
            else:
                break
        self._turn += len(taken)
        return taken

    def _message(self, delivery: Delivery) -> AbstractIncomingMessage:
        handle = _handle(delivery)
        if (
            handle.connection_generation != self._generation
            or self._channel is None
            or self._channel.is_closed
        ):
            raise DeliveryLost("its channel closed; the broker redelivers it")
        return handle.message

    async def _publish(self, queue: str, body: bytes, *, deliveries: int | None = None) -> None:
        """Publish and wait for the broker's confirm; DestinationRefused when it does not take the message.
        `deliveries`: the crash count the copy carries (a redelivered or given-back job)."""
        channel = self._live_channel()
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="application/json",
                    headers={DELIVERIES_HEADER: deliveries} if deliveries is not None else None,
                ),
                routing_key=queue,
            )
        except aiormq.exceptions.DeliveryError as error:  # nacked, or returned unroutable
            self._known_queues.discard(queue)  # declared again next time, in case it vanished
            reason = "unroutable" if isinstance(error, aiormq.exceptions.PublishError) else "not confirmed"
            raise DestinationRefused(queue, f"rabbitmq: publish {reason}") from error

    async def complete(self, delivery: Delivery, completed_key: CompletedKey | None) -> None:
        store = self._live_store()
        if completed_key is not None and store is not None:
            # Recorded before the ack, and even when the channel is already gone: the effect was applied,
            # and an ack the broker never sees leaves a redelivery, which must find the key.
            with self._store_call():
                async with store.pipeline(transaction=True) as pipe:
                    pipe.set(self._store_prefix + completed_key.key, b"1", ex=completed_key.ttl_seconds)
                    pipe.delete(self._claimed(completed_key.key))
                    await pipe.execute()
        message = self._message(delivery)
        with _unavailable_on_connection_errors():
            await message.ack()
        if completed_key is not None:
            self._completed[completed_key.key] = time.monotonic() + completed_key.ttl_seconds

    async def retry(self, delivery: Delivery, body: bytes, delay_seconds: float) -> None:
        await self._delay(delivery, body, delay_seconds)

    async def defer(self, delivery: Delivery, delay_seconds: float) -> None:
        await self._delay(delivery, delivery.body, delay_seconds, deliveries=delivery.deliveries)

    async def _delay(
        self, delivery: Delivery, body: bytes, delay_seconds: float, *, deliveries: int | None = None
    ) -> None:
        """`body` through a delay queue back onto the queue; `deliveries`: the crash count it carries."""
        message = self._message(delivery)
        waiting, arguments = delay_queue(_handle(delivery).queue, quantized_delay_ms(delay_seconds))
        with _unavailable_on_connection_errors():
            # Declared on every use: it renews the queue's expiry, so it cannot vanish under a message.
            await self._live_channel().declare_queue(waiting, durable=True, arguments=arguments)
            await self._publish(waiting, body, deliveries=deliveries)
            await message.ack()

    async def move(self, delivery: Delivery, queue: str | None, body: bytes) -> None:
        message = self._message(delivery)
        with _unavailable_on_connection_errors():
            if queue is not None:
                if queue not in self._known_queues:
                    await self._ensure_queue(queue)
                await self._publish(queue, body)
            await message.ack()

    async def release(self, delivery: Delivery) -> None:
        message = self._message(delivery)
        with _unavailable_on_connection_errors():
            # A copy with the count as it is, then the ack: a nack would count the give-back as a crash.
            await self._publish(_handle(delivery).queue, message.body, deliveries=delivery.deliveries)
            await message.ack()

    def _claimed(self, key: str) -> str:
        return f"{self._store_prefix}claim/{key}"

    async def claim(self, claim: KeyClaim) -> ClaimAnswer:
        """In the store; without one, every claim is granted (the runtime keeps copies within one
        process apart)."""
        expiry = self._completed.get(claim.key)
        if expiry is not None and expiry > time.monotonic():
            return ClaimAnswer(KeyState.COMPLETED)
        store = self._live_store()
        if store is None:
            return ClaimAnswer(KeyState.CLAIMED)
        with self._store_call():
            return await claim_in(
                store.register_script(CLAIM_KEY),
                self._store_prefix + claim.key,
                self._claimed(claim.key),
                claim,
            )

    async def release_claim(self, claim: KeyClaim) -> None:
        store = self._live_store()
        if store is None:
            return
        with self._store_call():
            await store.register_script(RELEASE_CLAIM)(keys=[self._claimed(claim.key)], args=[claim.holder])

    async def maintain(self) -> None:
        now = time.monotonic()
        for key in [key for key, expiry in self._completed.items() if expiry <= now]:
            del self._completed[key]

    async def enqueue(self, body: bytes) -> None:
        """Onto the queue of the job's priority level (the pool's own for normal)."""
        job_type = peek_job_type(body) if self._levels else None
        level = self._levels.get(job_type or "", Priority.NORMAL)
        with _unavailable_on_connection_errors():
            await self._publish(level_queue(self._queue_name, level, RABBITMQ_SEPARATOR), body)
