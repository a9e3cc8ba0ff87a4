"""A RabbitMQ queue consumed over AMQP 0-9-1 (`spec.queue.rabbitmq`), with an optional Redis server
as the pool's idempotency store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workerfleet.api.queue_kinds.base import KedaTrigger, ServerKind, WorkerNeeds, server_needs

if TYPE_CHECKING:
    from workerfleet.api.workerpool import RabbitMQ


class RabbitMQKind(ServerKind["RabbitMQ"]):
    name = "rabbitmq"
    field = "rabbitmq"
    product = "RabbitMQ"
    keda_takes_ca = False
    """KEDA's rabbitmq scaler cannot be given a CA."""

    def queue_name(self, spec: RabbitMQ) -> str:
        return spec.queue

    def describe(self, spec: RabbitMQ) -> str:
        return f"RabbitMQ queue {spec.queue} at {spec.address}"

    def keda_trigger(self, spec: RabbitMQ, target: str, activation: str) -> KedaTrigger:
        scheme = "amqps" if spec.tls is not None else "amqp"
        vhost = "" if spec.vhost == "/" else spec.vhost
        metadata = {
            "protocol": "amqp",
            "host": f"{scheme}://{spec.address}/{vhost}",
            "queueName": spec.queue,
            "mode": "QueueLength",
            "value": target,
            "activationValue": activation,
        }
        secrets = []
        if spec.auth is not None:
            secrets = [
                ("username", spec.auth.username_secret_ref),
                ("password", spec.auth.password_secret_ref),
            ]
        return KedaTrigger("rabbitmq", metadata, secrets)

    def worker_needs(self, spec: RabbitMQ) -> WorkerNeeds:
        store = spec.idempotency_store
        return WorkerNeeds(
            self.credentials(spec), server_needs(store.auth, store.tls) if store is not None else None
        )

    def keys_shared(self, spec: RabbitMQ) -> bool:
        return spec.idempotency_store is not None  # RabbitMQ has no key-value store of its own


KIND = RabbitMQKind()
