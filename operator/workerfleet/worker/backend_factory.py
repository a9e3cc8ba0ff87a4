"""Pick the queue backend the WorkerPool's .spec.queue names, with the credentials from the environment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec, Priority
from workerfleet.api.queue_kinds import kind_of, prometheus, rabbitmq, redis_list, redis_stream
from workerfleet.api.queue_kinds.base import CredentialNeeds
from workerfleet.api.workerpool import PrometheusQueue, RabbitMQ, RedisList, RedisStream
from workerfleet.worker.backend import QueueBackend
from workerfleet.worker.rate_limit import LocalPacer, Pacer, RedisPacer, limits_of
from workerfleet.worker.redis_list import RedisListBackend
from workerfleet.worker.redis_stream import RedisStreamBackend
from workerfleet.worker.redis_support import redis_client
from workerfleet.worker.runtime import CANCEL_GRACE_SECONDS
from workerfleet.worker.settings import ConfigurationError, WorkerSettings

DEFAULT_TIMEOUT_SECONDS = 30
CONSUMER_TIMEOUT_MARGIN_SECONDS = 60.0
"""Added to the longest timeoutSeconds for RabbitMQ's consumer timeout: the cancel grace, settling, and
a message waiting in the prefetch buffer for a free slot."""

log = logging.getLogger("workerfleet.worker")


def check_credentials(
    needs: CredentialNeeds,
    credentials: Credentials,
    *,
    what: str = "queue",
    variable: str = "WORKERFLEET_QUEUE",
) -> None:
    """Credentials the queue's auth references, and the CA its TLS names, must have arrived in the
    environment (`what` and `variable`: the idempotency store's, WORKERFLEET_STORE_*)."""
    if needs.ca is not None and credentials.ca_pem is None:
        raise ConfigurationError(f"the {what}'s tls names a CA Secret, but {variable}_CA is empty")
    if needs.password is None:
        return
    if credentials.password is None:
        raise ConfigurationError(f"the {what} has auth set, but {variable}_PASSWORD is empty")
    if needs.username is not None and credentials.username is None:
        raise ConfigurationError(f"the {what}'s auth names a user, but {variable}_USERNAME is empty")


def pool_dead_letter_queue(settings: WorkerSettings) -> str:
    """Where messages go that no JobType can take (not an envelope, or a type the pool does not serve):
    `<queue>.dlq` on the pool's own server."""
    kind, backend = kind_of(settings.queue)
    return f"{kind.queue_name(backend) or 'workerfleet'}.dlq"


def keys_per_process(settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]) -> list[str]:
    """Keyed job types whose completed keys only this process will know: a RabbitMQ pool without an
    idempotencyStore (the worker warns at start)."""
    kind, backend = kind_of(settings.queue)
    if kind.keys_shared(backend):
        return []
    return sorted(name for name, spec in policies.items() if spec.idempotency is not None)


def levels_of(policies: Mapping[str, JobTypeSpec]) -> dict[str, Priority]:
    return {name: spec.priority for name, spec in policies.items()}


def _longest_attempt(policies: Mapping[str, JobTypeSpec]) -> int:
    return max((spec.timeout_seconds for spec in policies.values()), default=DEFAULT_TIMEOUT_SECONDS)


def _redis_list(
    queue: RedisList, settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]
) -> QueueBackend:
    return RedisListBackend(
        queue,
        settings.credentials,
        settings.worker_id,
        heartbeat_seconds=settings.heartbeat_seconds,
        levels=levels_of(policies),
    )


def _redis_stream(
    queue: RedisStream, settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]
) -> QueueBackend:
    # A live worker settles an entry within its type's timeout, plus the grace a cancelled handler
    # gets; past that and a heartbeat interval, its worker is gone.
    margin = CANCEL_GRACE_SECONDS + settings.heartbeat_seconds
    return RedisStreamBackend(
        queue,
        settings.credentials,
        settings.worker_id,
        reclaim_idle_seconds=_longest_attempt(policies) + margin,
        reclaim_interval_seconds=settings.heartbeat_seconds,
        reclaim_idle_seconds_by_type={name: spec.timeout_seconds + margin for name, spec in policies.items()},
        limits=settings.limits,
        levels=levels_of(policies),
    )


def _rabbitmq(queue: RabbitMQ, settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]) -> QueueBackend:
    # Imported here: a Redis pool's worker starts without the AMQP client (about 0.1 s of its start-up).
    from workerfleet.worker.rabbitmq import RabbitMQBackend  # noqa: PLC0415

    return RabbitMQBackend(
        queue,
        settings.credentials,
        prefetch=settings.concurrency,
        # A message stays unacknowledged for at most its attempt, the cancel grace and the settling.
        consumer_timeout_seconds=_longest_attempt(policies) + CONSUMER_TIMEOUT_MARGIN_SECONDS,
        store_credentials=settings.store_credentials,
        levels=levels_of(policies),
    )


def _prometheus(
    queue: PrometheusQueue, settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]
) -> QueueBackend:
    raise ConfigurationError(
        "queue.prometheus only tells the operator the queue's depth; the workers of such a pool consume "
        "their queue with their own client, not with `workerfleet worker`"
    )


CONSUMERS: dict[str, Callable[[Any, WorkerSettings, Mapping[str, JobTypeSpec]], QueueBackend]] = {
    redis_list.KIND.name: _redis_list,
    redis_stream.KIND.name: _redis_stream,
    rabbitmq.KIND.name: _rabbitmq,
    prometheus.KIND.name: _prometheus,
}
"""Each queue kind's consumer, by the kind's name: the one place the worker maps a kind to its client.
Every kind has an entry, one the worker cannot consume an entry that says so."""


def open_backend(settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]) -> QueueBackend:
    kind, backend = kind_of(settings.queue)
    needs = kind.worker_needs(backend)
    if needs is not None:
        check_credentials(needs.queue, settings.credentials)
        if needs.store is not None:
            check_credentials(
                needs.store,
                settings.store_credentials,
                what="idempotency store",
                variable="WORKERFLEET_STORE",
            )
    return CONSUMERS[kind.name](backend, settings, policies)


def open_pacer(settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]) -> Pacer | None:
    """Where the pool's rate-limited JobTypes take their turns: the Redis server of a Redis queue, a
    RabbitMQ pool's idempotency store, else this process alone; None when no JobType is limited."""
    limits = limits_of(policies)
    if not limits:
        return None
    queue = settings.queue
    redis_queue = queue.redis or queue.redis_stream
    if redis_queue is not None:
        client = redis_client(
            redis_queue.address, redis_queue.database, settings.credentials, redis_queue.tls
        )
        return RedisPacer(client, limits)
    store = queue.rabbitmq.idempotency_store if queue.rabbitmq is not None else None
    if store is not None:
        return RedisPacer(
            redis_client(store.address, store.database, settings.store_credentials, store.tls), limits
        )
    return LocalPacer(limits)
