"""Pick the queue backend the WorkerPool's .spec.queue names, with the credentials from the environment."""

from __future__ import annotations

from collections.abc import Mapping

from workerfleet.api.common import TLSConfig
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import RabbitMQAuth, RedisAuth
from workerfleet.worker.backend import QueueBackend
from workerfleet.worker.rabbitmq import RabbitMQBackend
from workerfleet.worker.redis_list import RedisListBackend
from workerfleet.worker.redis_stream import RedisStreamBackend
from workerfleet.worker.runtime import CANCEL_GRACE_SECONDS
from workerfleet.worker.settings import ConfigurationError, WorkerSettings

DEFAULT_TIMEOUT_SECONDS = 30
CONSUMER_TIMEOUT_MARGIN_SECONDS = 60.0
"""Added to the longest timeoutSeconds for RabbitMQ's consumer timeout: the cancel grace, settling, and
a message waiting in the prefetch buffer for a free slot."""


def check_credentials(
    auth: RedisAuth | RabbitMQAuth | None,
    credentials: Credentials,
    tls: TLSConfig | None = None,
    *,
    what: str = "queue",
    variable: str = "WORKERFLEET_QUEUE",
) -> None:
    """Credentials the queue's auth references, and the CA its TLS names, must have arrived in the
    environment (`what` and `variable`: the idempotency store's, WORKERFLEET_STORE_*)."""
    if tls is not None and tls.ca_secret_ref is not None and credentials.ca_pem is None:
        raise ConfigurationError(f"the {what}'s tls names a CA Secret, but {variable}_CA is empty")
    if auth is None:
        return
    if credentials.password is None:
        raise ConfigurationError(f"the {what} has auth set, but {variable}_PASSWORD is empty")
    if auth.username_secret_ref is not None and credentials.username is None:
        raise ConfigurationError(f"the {what}'s auth names a user, but {variable}_USERNAME is empty")


def pool_dead_letter_queue(settings: WorkerSettings) -> str:
    """Where messages go that no JobType can take (not an envelope, or a type the pool does not serve):
    `<queue>.dlq` on the pool's own server."""
    queue = settings.queue
    name = (
        queue.redis.list_key
        if queue.redis is not None
        else queue.redis_stream.stream
        if queue.redis_stream is not None
        else queue.rabbitmq.queue
        if queue.rabbitmq is not None
        else "workerfleet"
    )
    return f"{name}.dlq"


def keys_per_process(settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]) -> list[str]:
    """Keyed job types whose completed keys only this process will know: a RabbitMQ pool without an
    idempotencyStore (the worker warns at start)."""
    rabbitmq = settings.queue.rabbitmq
    if rabbitmq is None or rabbitmq.idempotency_store is not None:
        return []
    return sorted(name for name, spec in policies.items() if spec.idempotency is not None)


def open_backend(settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]) -> QueueBackend:
    queue = settings.queue
    if queue.redis is not None:
        check_credentials(queue.redis.auth, settings.credentials, queue.redis.tls)
        return RedisListBackend(
            queue.redis,
            settings.credentials,
            settings.worker_id,
            heartbeat_seconds=settings.heartbeat_seconds,
        )
    if queue.redis_stream is not None:
        check_credentials(queue.redis_stream.auth, settings.credentials, queue.redis_stream.tls)
        # A live worker settles an entry within its type's timeout, plus the grace a cancelled handler
        # gets; past that and a heartbeat interval, its worker is gone.
        margin = CANCEL_GRACE_SECONDS + settings.heartbeat_seconds
        longest_attempt = max(
            (spec.timeout_seconds for spec in policies.values()), default=DEFAULT_TIMEOUT_SECONDS
        )
        return RedisStreamBackend(
            queue.redis_stream,
            settings.credentials,
            settings.worker_id,
            reclaim_idle_seconds=longest_attempt + margin,
            reclaim_interval_seconds=settings.heartbeat_seconds,
            reclaim_idle_seconds_by_type={
                name: spec.timeout_seconds + margin for name, spec in policies.items()
            },
        )
    if queue.rabbitmq is not None:
        check_credentials(queue.rabbitmq.auth, settings.credentials, queue.rabbitmq.tls)
        store = queue.rabbitmq.idempotency_store
        if store is not None:
            check_credentials(
                store.auth,
                settings.store_credentials,
                store.tls,
                what="idempotency store",
                variable="WORKERFLEET_STORE",
            )
        longest_attempt = max(
            (spec.timeout_seconds for spec in policies.values()), default=DEFAULT_TIMEOUT_SECONDS
        )
        return RabbitMQBackend(
            queue.rabbitmq,
            settings.credentials,
            prefetch=settings.concurrency,
            # A message stays unacknowledged for at most its attempt, the cancel grace and the settling.
            consumer_timeout_seconds=longest_attempt + CONSUMER_TIMEOUT_MARGIN_SECONDS,
            store_credentials=settings.store_credentials,
        )
    raise ConfigurationError(
        "queue.prometheus only tells the operator the queue's depth; the workers of such a pool consume "
        "their queue with their own client, not with `workerfleet worker`"
    )
