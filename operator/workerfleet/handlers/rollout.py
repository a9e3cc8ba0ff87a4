"""The clock of canary rollouts: one task per pool with a running canary.

Watch events alone never move a rollout on, since nothing changes while a step holds. Each task
wakes every second; when an analysis window has ended it reads Prometheus, and when a window ended
or a step's pause ran out it reconciles the pool (the state machine itself is planners.rollout).
Tasks rather than kopf daemons, for the same reason as the queue pollers: no finalizers.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from workerfleet.api.base import API_VERSION
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Analysis, RolloutPhase, RolloutStatus, WorkerPoolSpec
from workerfleet.backends.analysis import MetricProvider, PrometheusAnalysis
from workerfleet.handlers.activity import ACTIVITY, Pools
from workerfleet.handlers.pool_tasks import PoolKey, PoolTasks, pool_key
from workerfleet.handlers.pool_watch import follow_pools
from workerfleet.handlers.tenancy import tenancy
from workerfleet.handlers.workerpool import post_event, reconcile_by_name
from workerfleet.kube.client import kube
from workerfleet.planners.children import restricted_spec
from workerfleet.planners.rollout import (
    Measurement,
    analysis_due,
    analysis_window_seconds,
    progress_deadline_passed,
    step_may_end,
)
from workerfleet.planners.scope import prometheus_allowed
from workerfleet.planners.status import Event

TICK_SECONDS = 1.0
ROLLOUT_CLOCK_FAILED = "RolloutClockFailed"
RUNNING_PHASES = (RolloutPhase.PROGRESSING.value, RolloutPhase.PAUSED.value)


def _running(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    return bool(status.get("canaryRevision")) and (status.get("rollout") or {}).get("phase") in RUNNING_PHASES


def _credentials(namespace: str, analysis: Analysis) -> Credentials:
    api, server = kube(), analysis.prometheus
    token = (
        api.secret_value(namespace, server.bearer_token_secret_ref.name, server.bearer_token_secret_ref.key)
        if server.bearer_token_secret_ref is not None
        else None
    )
    ca = (
        api.secret_value(namespace, server.tls.ca_secret_ref.name, server.tls.ca_secret_ref.key)
        if server.tls is not None and server.tls.ca_secret_ref is not None
        else None
    )
    return Credentials(bearer_token=token, ca_pem=ca)


class _Metrics:
    """One pool's metric provider, opened again when the analysis settings change."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self.provider: MetricProvider | None = None
        self.settings: Analysis | None = None

    async def measure(self, analysis: Analysis, canary: str, stable: str, window_seconds: int) -> Measurement:
        if self.provider is None or self.settings != analysis:
            await self.close()
            address = analysis.prometheus.address
            if not prometheus_allowed(address, tenancy().prometheus_addresses):
                return Measurement(
                    None,
                    None,
                    error=f"Prometheus {address} is not in the operator's allowlist"
                    " (chart value allowedAddresses.prometheus)",
                )
            try:
                credentials = await asyncio.to_thread(_credentials, self.namespace, analysis)
            except LookupError as error:  # a missing Secret counts as unreadable metrics
                return Measurement(None, None, error=f"prometheus credentials: {error}")
            self.provider = PrometheusAnalysis(
                analysis, credentials, pool=self.name, namespace=self.namespace
            )
            self.settings = analysis
        return await self.provider.measure(canary, stable, window_seconds)

    async def close(self) -> None:
        if self.provider is not None:
            provider, self.provider = self.provider, None
            await provider.close()


class RolloutClocks(PoolTasks):
    """One ticking task per pool whose canary is running, started and stopped by watch events."""

    def update(self, body: dict[str, Any]) -> None:
        key = pool_key(body)
        if _running(body) and ACTIVITY.is_active():
            self.start(key, self._tick, "rollout")
        else:
            self.stop(key)

    async def on_activity(self, active: bool, pools: Pools) -> None:
        """Standby: stop every clock. Active: start the clocks of the rollouts running now."""
        if not active:
            await self.stop_all()
            return
        for pool in pools:
            if not pool["metadata"].get("deletionTimestamp"):
                self.update(pool)

    async def _tick(self, key: PoolKey) -> None:
        """Tick until the rollout stops running; spec edits apply at the next tick."""
        namespace, name = key
        metrics = _Metrics(namespace, name)
        try:
            while await self._tick_once(namespace, name, metrics):
                self.succeeded(key)
                await asyncio.sleep(TICK_SECONDS)
        finally:
            await metrics.close()

    async def failed(self, key: PoolKey, error: Exception, failures: int) -> None:
        """A Warning Event when the clock starts failing (it runs again after a backoff)."""
        if failures > 1:
            return
        body = await asyncio.to_thread(kube().get, API_VERSION, "WorkerPool", *key)
        if body is not None:
            message = f"the rollout clock failed and runs again after a backoff: {error}"[:500]
            post_event(body, Event("Warning", ROLLOUT_CLOCK_FAILED, message))

    async def _tick_once(self, namespace: str, name: str, metrics: _Metrics) -> bool:
        """One tick; False when the pool's rollout no longer runs."""
        if not ACTIVITY.is_active():
            return False
        body = await asyncio.to_thread(kube().get, API_VERSION, "WorkerPool", namespace, name)
        if body is None or not _running(body):
            return False
        spec = WorkerPoolSpec.model_validate(restricted_spec(body["spec"]))
        canary = spec.rollout.canary if spec.rollout is not None else None
        status = body["status"]
        try:
            rollout = RolloutStatus.model_validate(status["rollout"])
        except ValidationError:
            return False
        if canary is None:
            await asyncio.to_thread(reconcile_by_name, namespace, name)
            return True
        now = datetime.now(UTC)
        measurement = None
        if canary.analysis is not None and analysis_due(rollout, canary.analysis, now):
            measurement = await metrics.measure(
                canary.analysis,
                status["canaryRevision"],
                status["stableRevision"],
                analysis_window_seconds(rollout, canary.analysis, now),
            )
        if (
            measurement is not None
            or step_may_end(rollout, canary, now)
            or progress_deadline_passed(rollout, canary, now)
        ):
            await asyncio.to_thread(reconcile_by_name, namespace, name, measurement)
        return True


CLOCKS = RolloutClocks()
follow_pools(CLOCKS, CLOCKS.on_activity, CLOCKS.stop_all, "rollout")
