"""How many jobs wait for a person (the review queues) and how many failed for good (the dead-letter
queues), read by the operator for status.queue, its metrics and the review-backlog alert.

Redis lists and streams: LLEN / XLEN, and the oldest review job's age from when it got there (its
envelope's lastFailure.at: the list's tail, the stream's first entry). RabbitMQ: the ready-message count
of a passive declare; the oldest age is not readable over AMQP without taking the message, so it is
left out there (the alert then does not fire for RabbitMQ pools; the depth still shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import exceptions as redis_errors

from workerfleet.api.credentials import Credentials
from workerfleet.api.queue_kinds import kind_of, rabbitmq, redis_list, redis_stream
from workerfleet.api.workerpool import Queue, RabbitMQ
from workerfleet.backends.base import within_count
from workerfleet.backends.bounds import ANSWER_TIMEOUT_SECONDS, AnswerOutOfBoundsError, decode_json
from workerfleet.backends.rabbitmq import RabbitMQDepth
from workerfleet.backends.redis_common import MALFORMED_ANSWER, connect, release, unreadable
from workerfleet.tls import client_context


@dataclass(frozen=True)
class HeldSample:
    review_depth: int
    dead_letter_depth: int
    review_oldest_age_seconds: float | None
    """How long the oldest review job has waited for a person, where the backend can tell."""


def entered_age_seconds(raw: bytes | str | None, now: datetime) -> float | None:
    """Seconds since a job got to a review or dead-letter queue (its lastFailure.at); None when the
    message does not say, or says it past the operator's bounds on what it decodes."""
    if raw is None:
        return None
    try:
        envelope: Any = decode_json(raw.encode() if isinstance(raw, str) else raw)
        at = datetime.fromisoformat(envelope["lastFailure"]["at"])
    except (ValueError, KeyError, TypeError, AnswerOutOfBoundsError):
        return None
    return max(0.0, (now - at).total_seconds()) if at.tzinfo is not None else None


def _oldest(ages: Sequence[float | None]) -> float | None:
    known = [age for age in ages if age is not None]
    return max(known, default=None)


async def _redis(
    queue: Queue, credentials: Credentials, review: Sequence[str], dead: Sequence[str]
) -> HeldSample:
    kind, backend = kind_of(queue)
    stream = kind.name == redis_stream.KIND.name
    client = connect(backend.address, backend.database, credentials, tls=backend.tls)
    try:
        async with client.pipeline(transaction=False) as pipeline:
            for name in (*review, *dead):
                pipeline.xlen(name) if stream else pipeline.llen(name)
            for name in review:
                pipeline.xrange(name, count=1) if stream else pipeline.lindex(name, -1)
            replies: list[Any] = await pipeline.execute()
        depths = [int(depth) for depth in replies[: len(review) + len(dead)]]
        heads = replies[len(review) + len(dead) :]
        if stream:
            heads = [(entries[0][1] or {}).get(b"job") if entries else None for entries in heads]
    except (redis_errors.RedisError, OSError, *MALFORMED_ANSWER) as error:
        raise unreadable("review and dead-letter queues", error) from error
    finally:
        await release(client)
    now = datetime.now(UTC)
    return HeldSample(
        review_depth=within_count(sum(depths[: len(review)])),
        dead_letter_depth=within_count(sum(depths[len(review) :])),
        review_oldest_age_seconds=_oldest([entered_age_seconds(head, now) for head in heads]),
    )


async def _rabbitmq(
    queue: RabbitMQ, credentials: Credentials, review: Sequence[str], dead: Sequence[str]
) -> HeldSample:
    from aiormq.exceptions import AMQPError, ChannelNotFoundEntity  # noqa: PLC0415

    from workerfleet.backends.amqp_transport import amqp_failure, connect_bounded  # noqa: PLC0415

    url = RabbitMQDepth(queue, credentials).url()
    context = client_context(credentials.ca_pem, queue.tls.server_name) if queue.tls is not None else None
    counts: dict[str, int] = {}
    try:
        connection = await connect_bounded(url, context)
        try:
            for name in (*review, *dead):
                try:
                    async with connection.channel() as channel:
                        declared = await channel.declare_queue(
                            name, passive=True, timeout=ANSWER_TIMEOUT_SECONDS
                        )
                        counts[name] = int(declared.declaration_result.message_count or 0)
                except ChannelNotFoundEntity:
                    counts[name] = 0  # not created yet: nothing went there
        finally:
            await connection.close()
    except (AMQPError, OSError, TimeoutError, RecursionError) as error:
        raise amqp_failure("review and dead-letter queues", error) from error
    return HeldSample(
        review_depth=within_count(sum(counts[name] for name in review)),
        dead_letter_depth=within_count(sum(counts[name] for name in dead)),
        review_oldest_age_seconds=None,
    )


async def read_held(
    queue: Queue, credentials: Credentials, review: Sequence[str], dead_letters: Sequence[str]
) -> HeldSample | None:
    """The depths of the named queues on the pool's server; None for a queue kind whose server the
    operator does not know (Prometheus)."""
    kind, backend = kind_of(queue)
    if kind.name in (redis_list.KIND.name, redis_stream.KIND.name):
        return await _redis(queue, credentials, review, dead_letters)
    if kind.name == rabbitmq.KIND.name:
        return await _rabbitmq(backend, credentials, review, dead_letters)
    return None
