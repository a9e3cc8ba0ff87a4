"""The review and dead-letter depths of every pool, where people look: status.queue (and so
`kubectl get wp -o wide`), the operator's metrics, and the chart's review-backlog alert.

One task per pool on the active replica reads them every READ_INTERVAL_SECONDS (they change as people
and failures act, not with load, so far less often than the autoscaling poll), writing status only
when a number changed. A pool whose queue address tenancy refuses, or whose credentials the operator
may not read, is skipped quietly: the autoscaling poller reports those on the pool already.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from workerfleet.api.base import API_VERSION
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.queue_kinds import kind_of
from workerfleet.api.workerpool import Queue, WorkerPoolSpec
from workerfleet.backends.base import QueueUnreachableError
from workerfleet.backends.held import HeldSample, read_held
from workerfleet.handlers.activity import ACTIVITY, Pools
from workerfleet.handlers.pool_metrics import POOL_METRICS
from workerfleet.handlers.pool_tasks import PoolBodies, PoolKey, PoolTasks, pool_key
from workerfleet.handlers.pool_watch import follow_pools
from workerfleet.handlers.tenancy import tenancy
from workerfleet.handlers.workerpool import pool_lock
from workerfleet.kube.client import kube
from workerfleet.planners.children import restricted_spec
from workerfleet.planners.held import dead_letter_queues, plan_held_status, review_queues
from workerfleet.planners.scope import refused_queue_address

logger = logging.getLogger(__name__)

READ_INTERVAL_SECONDS = 30.0
READ_TIMEOUT_SECONDS = 10.0


def _job_types(namespace: str, names: list[str]) -> dict[str, JobTypeSpec]:
    found: dict[str, JobTypeSpec] = {}
    for name in names:
        body = kube().get(API_VERSION, "JobType", namespace, name)
        if body is not None:
            found[name] = JobTypeSpec.model_validate(body["spec"])
    return found


def queue_credentials(namespace: str, queue: Queue) -> Credentials | None:
    """The queue's credentials as the operator may read them; None when it may not (or they are gone)."""
    kind, backend = kind_of(queue)
    try:
        values = {
            name: kube().secret_value(namespace, reference.name, reference.key)
            for name, reference in kind.credentials(backend).references()
        }
    except LookupError:
        return None
    return Credentials(**values)


def _record(namespace: str, name: str, sample: HeldSample) -> None:
    """Write status.queue's review and dead-letter depths when they changed."""
    api = kube()
    with pool_lock(namespace, name):
        pool = api.get(API_VERSION, "WorkerPool", namespace, name)
        if pool is None or not ACTIVITY.is_active():
            return
        patch = plan_held_status(pool.get("status") or {}, sample.review_depth, sample.dead_letter_depth)
        if patch is not None:
            api.patch_pool_status(namespace, name, patch)


async def read_once(body: dict[str, Any]) -> HeldSample | None:
    """Read the pool's review and dead-letter queues and record what was read; None when they could
    not be read (a refused address, credentials not granted, a queue kind without a server)."""
    namespace, name = pool_key(body)
    spec = WorkerPoolSpec.model_validate(restricted_spec(body["spec"]))
    settings = tenancy()
    if refused_queue_address(spec.queue, settings.queue_addresses, settings.prometheus_addresses):
        return None
    credentials = await asyncio.to_thread(queue_credentials, namespace, spec.queue)
    if credentials is None:
        return None
    job_types = await asyncio.to_thread(_job_types, namespace, list(spec.job_types))
    try:
        sample = await asyncio.wait_for(
            read_held(
                spec.queue, credentials, review_queues(job_types), dead_letter_queues(spec.queue, job_types)
            ),
            READ_TIMEOUT_SECONDS,
        )
    except (QueueUnreachableError, TimeoutError) as error:
        logger.info("%s/%s: review and dead-letter queues not read: %s", namespace, name, error)
        return None
    if sample is None or not ACTIVITY.is_active():
        return None
    POOL_METRICS.observe_held(namespace, name, sample.review_oldest_age_seconds)
    await asyncio.to_thread(_record, namespace, name, sample)
    return sample


class HeldReaders(PoolTasks):
    """One reading task per pool, on the active replica."""

    def __init__(self) -> None:
        super().__init__()
        self._bodies = PoolBodies()

    def update(self, body: dict[str, Any]) -> None:
        key = pool_key(body)
        self._bodies[key] = body
        if ACTIVITY.is_active():
            self.start(key, self._read, "review and dead-letter reading")

    def stop(self, key: PoolKey) -> None:
        self._bodies.pop(key, None)
        super().stop(key)

    async def on_activity(self, active: bool, pools: Pools) -> None:
        if not active:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            self._tasks.clear()
            await asyncio.gather(*tasks, return_exceptions=True)
            return
        for pool in pools:
            if not pool["metadata"].get("deletionTimestamp"):
                self.update(pool)

    async def _read(self, key: PoolKey) -> None:
        while key in self._bodies and ACTIVITY.is_active():
            await read_once(self._bodies[key])
            self.succeeded(key)
            await asyncio.sleep(READ_INTERVAL_SECONDS)


HELD_READERS = HeldReaders()
follow_pools(HELD_READERS, HELD_READERS.on_activity, HELD_READERS.stop_all, "held-jobs")
