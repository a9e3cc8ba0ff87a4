"""Queue polling for autoscaled pools: one daemon per pool, so a slow queue delays no other.

Each poll reads the depth, decides (pure, planners.scaling) what the metrics API serves the HPA and
whether the operator itself must set replicas (activation from zero, back to zero after the
cooldown, fallback), then records status.queue and the autoscaling conditions when they changed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from workerfleet.adapter.readings import Reading
from workerfleet.api.base import API_VERSION
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.queue_kinds import kind_of
from workerfleet.api.workerpool import (
    Autoscaling,
    AutoscalingEngine,
    BreakerState,
    Queue,
    WorkerPoolSpec,
)
from workerfleet.backends.base import DepthSource, QueueSample, QueueUnreachableError
from workerfleet.backends.bounds import timed_out
from workerfleet.backends.sources import open_source
from workerfleet.handlers.activity import ACTIVITY, Pools
from workerfleet.handlers.capacity import WORKER_CAPACITY
from workerfleet.handlers.metrics_api import READINGS
from workerfleet.handlers.pool_metrics import POOL_METRICS
from workerfleet.handlers.pool_tasks import PoolBodies, PoolKey, PoolTasks, pool_key
from workerfleet.handlers.pool_watch import follow_pools
from workerfleet.handlers.tenancy import tenancy
from workerfleet.handlers.workerpool import pool_lock, post_event
from workerfleet.kube.client import CredentialsNotGrantedError, kube
from workerfleet.planners.children import restricted_spec
from workerfleet.planners.scaling import (
    PollFacts,
    PollPlan,
    QueueConditions,
    ScalingMemory,
    ScalingReason,
    plan_poll,
    plan_polling_failure,
    plan_queue_status,
    pool_rate_cap,
)
from workerfleet.planners.scope import Refusal, address_refusal, credentials_hint
from workerfleet.planners.status import Event
from workerfleet.planners.supervision import reading_lifetime_seconds

logger = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 10.0
DEADLINE_REFRESH_SECONDS = 30.0
"""JobType deadlines are read again this often, not on every poll (a poll can be every second)."""
QUEUE_POLLS = Counter(
    "workerfleet_queue_polls_total", "Reads of the pools' queues, by result (read or failed).", ["result"]
)


def _builtin_autoscaling(spec: Mapping[str, Any]) -> bool:
    scaling = spec.get("autoscaling") or {}
    return (
        bool(scaling) and scaling.get("engine", AutoscalingEngine.BUILTIN.value) == AutoscalingEngine.BUILTIN
    )


@dataclass
class PollMemory:
    """What one pool's poller carries from one poll to the next: the decisions' memory, and what it
    read last."""

    scaling: ScalingMemory = field(default_factory=ScalingMemory)
    deadline: int | None = None
    rate_limits: list[float | None] = field(default_factory=list)
    """Each JobType's rateLimit.jobsPerSecond, read with the deadline."""
    deadline_read: tuple[tuple[str, ...], float] | None = None
    """Which JobTypes the deadline was read from, and when (monotonic seconds)."""
    failing: bool = False
    """The poller failed and said so on the pool: its next record reads the pool fresh, to clear it."""


def _credentials(namespace: str, queue: Queue) -> Credentials:
    api = kube()
    kind, backend = kind_of(queue)
    values = {
        name: api.secret_value(namespace, reference.name, reference.key)
        for name, reference in kind.credentials(backend).references()
    }
    return Credentials(**values)


def _job_type_limits(namespace: str, job_types: list[str]) -> tuple[int | None, list[float | None]]:
    """The strictest deadline of the JobTypes, and each one's rate limit (None: unlimited or missing)."""
    deadlines = []
    rates: list[float | None] = []
    for name in job_types:
        body = kube().get(API_VERSION, "JobType", namespace, name)
        spec = JobTypeSpec.model_validate(body["spec"]) if body is not None else None
        if spec is not None and spec.deadline_seconds is not None:
            deadlines.append(spec.deadline_seconds)
        rates.append(spec.rate_limit.jobs_per_second if spec is not None and spec.rate_limit else None)
    return min(deadlines, default=None), rates


def _record(
    body: dict[str, Any],
    queue_status: dict[str, Any],
    judged: QueueConditions,
    now: datetime,
    *,
    fresh: bool = False,
) -> list[Event]:
    """Write status.queue and the autoscaling conditions when they changed; return Events for flips.

    The pool as last watched answers "nothing changed" without a request; only a change is read back
    fresh (under the pool's lock, since the reconciler writes status too) and written. `fresh`: read
    it fresh anyway (the watched pool may predate a failure this poller wrote while the watch was down).
    """
    metadata = body["metadata"]
    if (
        not fresh
        and plan_queue_status(
            body.get("status") or {}, metadata.get("generation"), queue_status, judged, now
        ).patch
        is None
    ):
        return []
    namespace, name = metadata["namespace"], metadata["name"]
    api = kube()
    with pool_lock(namespace, name):
        pool = api.get(API_VERSION, "WorkerPool", namespace, name)
        if pool is None or not ACTIVITY.is_active():
            return []
        plan = plan_queue_status(
            pool.get("status") or {}, pool["metadata"].get("generation"), queue_status, judged, now
        )
        if plan.patch is not None:
            api.patch_pool_status(namespace, name, plan.patch)
    return plan.events


def _refusal(queue: Queue) -> Refusal | None:
    """Why the queue may not be contacted at all (before any Secret is read); None when it may."""
    settings = tenancy()
    return address_refusal(queue, settings.queue_addresses, settings.prometheus_addresses)


async def _read(source: DepthSource) -> QueueSample | QueueUnreachableError:
    try:
        return await asyncio.wait_for(source.read(), READ_TIMEOUT_SECONDS)
    except QueueUnreachableError as error:
        return error
    except TimeoutError:
        bound = timed_out(READ_TIMEOUT_SECONDS)
        return QueueUnreachableError(str(bound), bound.reason)


def _record_failure(namespace: str, name: str, message: str) -> None:
    """ScalingActive=False with the reason, unless the pool says so already."""
    api = kube()
    with pool_lock(namespace, name):
        pool = api.get(API_VERSION, "WorkerPool", namespace, name)
        if pool is None or not ACTIVITY.is_active():
            return
        patch = plan_polling_failure(
            pool.get("status") or {}, pool["metadata"].get("generation"), message, datetime.now(UTC)
        )
        if patch is not None:
            api.patch_pool_status(namespace, name, patch)


async def _apply(body: dict[str, Any], plan: PollPlan, reading_lifetime: float) -> None:
    """Serve the plan's value to the HPA, and set the replicas it sets."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if plan.served_value is None:
        READINGS.forget(namespace, name)
    else:
        READINGS.put(namespace, name, Reading(plan.served_value, datetime.now(UTC), reading_lifetime))
    if plan.scale_to is None or not ACTIVITY.is_active():
        return
    await asyncio.to_thread(kube().scale_pool, namespace, name, plan.scale_to)
    if plan.scale_event is not None:
        post_event(body, plan.scale_event)


class Pollers(PoolTasks):
    """One polling task per autoscaled pool, driven by the pool's watch events."""

    def __init__(self) -> None:
        super().__init__()
        self._bodies = PoolBodies()
        self._memories: dict[PoolKey, PollMemory] = {}
        """Kept across a failed poller's restarts (the cooldown clock, the failures of the queue)."""

    def update(self, body: dict[str, Any]) -> None:
        key = pool_key(body)
        self._bodies[key] = body
        if not _builtin_autoscaling(body.get("spec") or {}):
            self.stop(key)
        elif ACTIVITY.is_active():  # else remembered; polled once this replica turns active
            self.start(key, self._poll, "poll")

    def stop(self, key: PoolKey) -> None:
        self._bodies.pop(key, None)
        self._memories.pop(key, None)
        super().stop(key)
        READINGS.forget(*key)

    async def on_activity(self, active: bool, pools: Pools) -> None:
        """Standby: stop polling (and serving readings). Active: poll exactly the pools that exist now."""
        if not active:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            self._tasks.clear()
            self._memories.clear()
            READINGS.clear()
            await asyncio.gather(*tasks, return_exceptions=True)
            return
        current = {pool_key(pool) for pool in pools}
        for key in [key for key in self._bodies if key not in current]:
            self.stop(key)
        for pool in pools:
            if not pool["metadata"].get("deletionTimestamp"):
                self.update(pool)

    async def failed(self, key: PoolKey, error: Exception, failures: int) -> None:
        """ScalingActive=False with the error while the poller fails (cleared by its next good poll),
        and a Warning Event when it starts failing."""
        memory = self._memories.setdefault(key, PollMemory())
        memory.failing = True
        message = f"polling fails and is retried with backoff: {_describe(error)}"
        await asyncio.to_thread(_record_failure, *key, message)
        body = self._bodies.get(key)
        if failures == 1 and body is not None:
            post_event(body, Event("Warning", ScalingReason.POLLING_FAILED, message))

    async def _poll(self, key: PoolKey) -> None:
        """Poll until autoscaling is turned off or the pool goes; spec edits apply at the next poll."""
        namespace = key[0]
        restarted = key in self._memories
        memory = self._memories.setdefault(key, PollMemory())
        source: DepthSource | None = None
        source_queue: Queue | None = None
        try:
            body = self._bodies.get(key)
            interval = ((body or {}).get("spec", {}).get("autoscaling") or {}).get(
                "pollingIntervalSeconds", 0
            )
            if not restarted:  # pollers started together (start-up, turning active) spread over one interval
                await asyncio.sleep(random.uniform(0, float(interval)))  # noqa: S311  (not for security)
            while key in self._bodies and ACTIVITY.is_active():
                body = self._bodies[key]
                spec = WorkerPoolSpec.model_validate(restricted_spec(body["spec"]))
                scaling = spec.autoscaling
                if scaling is None:
                    return
                unusable: str | None = None
                refusal: tuple[str, str] | None = None
                if source is None or spec.queue != source_queue:
                    if source is not None:
                        await source.close()
                        source = None
                    refusal = _refusal(spec.queue)
                    if refusal is None:
                        try:
                            credentials = await asyncio.to_thread(_credentials, namespace, spec.queue)
                        except CredentialsNotGrantedError as error:  # reported; tried again next poll
                            role = tenancy().queue_credentials_role
                            hint = credentials_hint(namespace, error.args[0], role)
                            refusal = (ScalingReason.CREDENTIALS_NOT_GRANTED, hint)
                        except LookupError as error:  # a missing Secret: report it, try again next poll
                            unusable = f"queue credentials: {error.args[0]}"
                        else:
                            source, source_queue = open_source(spec.queue, credentials), spec.queue
                await _poll_once(body, spec, scaling, source, memory, unusable=unusable, refusal=refusal)
                self.succeeded(key)
                interval = scaling.polling_interval_seconds
                del body, spec, scaling  # read again next round; not kept through the sleep
                await asyncio.sleep(interval)
        finally:
            if source is not None:
                await source.close()


async def _poll_once(
    body: dict[str, Any],
    spec: WorkerPoolSpec,
    scaling: Autoscaling,
    source: DepthSource | None,
    memory: PollMemory,
    *,
    unusable: str | None,
    refusal: tuple[str, str] | None = None,
) -> None:
    """`unusable`: why there is no source to read; `refusal`: (reason, message) when none may be opened."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    failed = None if unusable is None else QueueUnreachableError(unusable)
    sample: QueueSample | None = None
    if source is not None:
        read = await _read(source)
        sample, failed = (read, None) if isinstance(read, QueueSample) else (None, read)
    QUEUE_POLLS.labels("read" if sample is not None else "failed").inc()
    if not ACTIVITY.is_active():
        return  # turned standby while reading: the active replica decides and writes
    job_types = tuple(spec.job_types)
    limits_read = memory.deadline_read
    if (
        limits_read is None
        or limits_read[0] != job_types
        or time.monotonic() - limits_read[1] >= DEADLINE_REFRESH_SECONDS
    ):
        memory.deadline, memory.rate_limits = await asyncio.to_thread(
            _job_type_limits, namespace, list(job_types)
        )
        memory.deadline_read = (job_types, time.monotonic())
        WORKER_CAPACITY.want(namespace, name, any(limit is not None for limit in memory.rate_limits))
    POOL_METRICS.observe_deadline(namespace, name, memory.deadline)
    now = datetime.now(UTC)
    facts = PollFacts(
        scaling=scaling,
        replicas=spec.replicas,
        annotations=body["metadata"].get("annotations") or {},
        depth=sample.depth if sample else None,
        oldest_age_seconds=sample.oldest_age_seconds if sample else None,
        error=str(failed) if failed is not None else None,
        error_reason=failed.reason if failed is not None else None,
        refusal=refusal,
        deadline_seconds=memory.deadline,
        now=now,
        circuit_open=_circuit_open(body),
        rate_cap=pool_rate_cap(memory.rate_limits, WORKER_CAPACITY.get(namespace, name)),
    )
    plan = plan_poll(facts, memory.scaling)
    memory.scaling = plan.memory
    lifetime = reading_lifetime_seconds(scaling.polling_interval_seconds, READ_TIMEOUT_SECONDS)
    await _apply(body, plan, lifetime)
    if sample is not None:
        POOL_METRICS.observe_queue(namespace, name, sample.depth, sample.oldest_age_seconds, now)
    if not ACTIVITY.is_active():
        return
    events = await asyncio.to_thread(
        _record, body, plan.queue_status, plan.conditions, now, fresh=memory.failing
    )
    memory.failing = False
    for event in events:
        post_event(body, event)


def _circuit_open(body: Mapping[str, Any]) -> bool:
    breaker = (body.get("status") or {}).get("circuitBreaker") or {}
    return bool(breaker.get("state", BreakerState.CLOSED) != BreakerState.CLOSED)


def _describe(error: Exception) -> str:
    """An exception in one line, short enough for a condition's message."""
    return f"{type(error).__name__}: {error}".replace("\n", " ")[:300]


POLLERS = Pollers()
follow_pools(POLLERS, POLLERS.on_activity, POLLERS.stop_all, "autoscaling")
