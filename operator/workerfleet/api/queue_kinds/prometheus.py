"""Any queue whose depth Prometheus knows (`spec.queue.prometheus`): the operator scales on a query's
value, and the workers consume the queue with their own client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workerfleet.api.queue_kinds.base import Allowlist, CredentialNeeds, KedaTrigger, WorkerNeeds

if TYPE_CHECKING:
    from workerfleet.api.workerpool import PrometheusQueue


class PrometheusKind:
    name = "prometheus"
    field = "prometheus"
    product = "Prometheus"
    keda_takes_ca = False
    """KEDA's prometheus scaler cannot be given a CA."""

    def queue_name(self, spec: PrometheusQueue) -> None:
        return None

    def describe(self, spec: PrometheusQueue) -> str:
        return "a queue the operator only watches"

    def address(self, spec: PrometheusQueue) -> tuple[str, Allowlist]:
        return str(spec.address), Allowlist.PROMETHEUS

    def credentials(self, spec: PrometheusQueue) -> CredentialNeeds:
        return CredentialNeeds(
            bearer_token=spec.bearer_token_secret_ref,
            ca=spec.tls.ca_secret_ref if spec.tls is not None else None,
        )

    def keda_trigger(self, spec: PrometheusQueue, target: str, activation: str) -> KedaTrigger:
        metadata = {
            "serverAddress": str(spec.address),
            "query": spec.query,
            "threshold": target,
            "activationThreshold": activation,
            "ignoreNullValues": "true",
        }
        secrets = []
        if spec.bearer_token_secret_ref is not None:
            metadata["authModes"] = "bearer"
            secrets.append(("bearerToken", spec.bearer_token_secret_ref))
        return KedaTrigger("prometheus", metadata, secrets)

    def worker_needs(self, spec: PrometheusQueue) -> WorkerNeeds | None:
        return None

    def keys_shared(self, spec: PrometheusQueue) -> bool:
        return True  # workerfleet's worker does not run these pools


KIND = PrometheusKind()
