"""Scheduled JobTypes: the active operator replica enqueues each run on time to every pool serving the
type (planners.schedule says which runs are due).

One task, on the active replica only, looks at every scheduled JobType each TICK_SECONDS. A run is
claimed in the JobType's status (lastScheduleTime, with the resourceVersion it was planned on, so two
replicas cannot both claim it) and then enqueued; a replica that takes over after a failover reads
lastScheduleTime fresh and catches up the runs still within startingDeadlineSeconds, once each. A
crash between a claim and its enqueue (a few milliseconds) loses that run rather than doubling it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from workerfleet.api.base import API_VERSION, GROUP, VERSION
from workerfleet.api.jobtype import ConcurrencyPolicy, JobTypeSpec, Priority, Schedule
from workerfleet.api.workerpool import WorkerPoolSpec
from workerfleet.backends.base import QueueUnreachableError
from workerfleet.backends.enqueue import enqueue
from workerfleet.handlers.activity import ACTIVITY, Pools
from workerfleet.handlers.held_jobs import queue_credentials
from workerfleet.handlers.tenancy import served, tenancy
from workerfleet.handlers.workerpool import post_event
from workerfleet.kube.client import kube
from workerfleet.planners.children import restricted_spec
from workerfleet.planners.schedule import (
    forbidden_by_backlog,
    next_run,
    plan_runs,
    rfc3339,
    run_claim,
    run_envelope,
    schedule_problem,
)
from workerfleet.planners.scope import refused_queue_address
from workerfleet.planners.status import Event

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0


class ScheduleReason:
    """Reasons of the Events a schedule posts on its JobType."""

    RUN_ENQUEUED = "ScheduledRunEnqueued"
    RUN_MISSED = "ScheduledRunMissed"
    RUN_SKIPPED = "ScheduledRunSkipped"
    RUN_FAILED = "ScheduledRunFailed"
    INVALID_SCHEDULE = "InvalidSchedule"


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None


def _pools_serving(namespace: str, job_type: str) -> list[dict[str, Any]]:
    return [
        pool
        for pool in kube().list_pools((namespace,))
        if job_type in ((pool.get("spec") or {}).get("jobTypes") or [])
        and not pool["metadata"].get("deletionTimestamp")
    ]


async def _enqueue_run(job_type: dict[str, Any], schedule: Schedule, at: datetime) -> None:
    """The run's job onto the queue of every pool serving the type; an Event on the JobType per pool
    that did not get it (unreachable, Forbid with a backlog)."""
    namespace, name = job_type["metadata"]["namespace"], job_type["metadata"]["name"]
    body = json.dumps(run_envelope(name, schedule, at), separators=(",", ":")).encode()
    level = Priority((job_type.get("spec") or {}).get("priority") or Priority.NORMAL)
    pools = await asyncio.to_thread(_pools_serving, namespace, name)
    settings = tenancy()
    for pool in pools:
        pool_name = pool["metadata"]["name"]
        if schedule.concurrency_policy == ConcurrencyPolicy.FORBID and forbidden_by_backlog(
            pool.get("status") or {}
        ):
            message = f"run {rfc3339(at)} skipped for pool {pool_name}: jobs still wait there (Forbid)"
            post_event(job_type, Event("Normal", ScheduleReason.RUN_SKIPPED, message))
            continue
        spec = WorkerPoolSpec.model_validate(restricted_spec(pool["spec"]))
        refused = refused_queue_address(spec.queue, settings.queue_addresses, settings.prometheus_addresses)
        credentials = None if refused else await asyncio.to_thread(queue_credentials, namespace, spec.queue)
        try:
            if credentials is None:
                raise QueueUnreachableError(refused or "the operator may not read the queue's credentials")
            await enqueue(spec.queue, credentials, body, level)
        except QueueUnreachableError as error:
            message = f"run {rfc3339(at)} not enqueued for pool {pool_name}: {error}"
            post_event(job_type, Event("Warning", ScheduleReason.RUN_FAILED, message))
            continue
        message = f"run {rfc3339(at)} enqueued for pool {pool_name}"
        post_event(job_type, Event("Normal", ScheduleReason.RUN_ENQUEUED, message))


class Schedules:
    """The scheduled JobTypes as the watch shows them, and the one task that runs them."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._warned: dict[tuple[str, str], int] = {}
        """The generation whose invalid schedule was reported, per JobType."""
        self._task: asyncio.Task[None] | None = None

    def remember(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED" or not (body.get("spec") or {}).get("schedule"):
            self._keys.discard(key)
            return
        self._keys.add(key)
        if ACTIVITY.is_active() and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="scheduled JobTypes")

    async def on_activity(self, active: bool, pools: Pools) -> None:
        if active and self._keys and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="scheduled JobTypes")
        elif not active and self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def stop(self) -> None:
        await self.on_activity(False, [])

    async def _run(self) -> None:
        while ACTIVITY.is_active() and self._keys:
            for key in sorted(self._keys):
                try:
                    await self._look(*key)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one JobType's trouble (the API server away) must not stop the others
                    logger.exception("schedule of JobType %s/%s failed; looking again next tick", *key)
            await asyncio.sleep(TICK_SECONDS)

    async def _look(self, namespace: str, name: str) -> None:
        """Enqueue the JobType's due runs, each claimed first; keep nextScheduleTime current."""
        seen = await asyncio.to_thread(kube().get, API_VERSION, "JobType", namespace, name)
        schedule = self._schedule_of(seen)
        if seen is None or schedule is None:
            return
        now = datetime.now(UTC)
        created = _time(seen["metadata"].get("creationTimestamp")) or now
        status = seen.get("status") or {}
        plan = plan_runs(schedule, _time(status.get("lastScheduleTime")), created, now)
        if not plan.due and not plan.missed:
            wanted = rfc3339(plan.next_time or next_run(schedule, now))
            if status.get("nextScheduleTime") != wanted and ACTIVITY.is_active():
                await asyncio.to_thread(
                    kube().patch_job_type_status, namespace, name, {"nextScheduleTime": wanted}
                )
            return
        # Due: plan again on the JobType as stored now, and claim each run on that version.
        fresh = await asyncio.to_thread(kube().read, API_VERSION, "JobType", namespace, name)
        if fresh is None or not ACTIVITY.is_active():
            return
        status = fresh.get("status") or {}
        plan = plan_runs(schedule, _time(status.get("lastScheduleTime")), created, now)
        version = str(fresh["metadata"]["resourceVersion"])
        if plan.missed:
            claim = run_claim(plan.missed[-1], None if plan.due else plan.next_time, version)
            claimed = await asyncio.to_thread(kube().claim_job_type_status, namespace, name, claim)
            if claimed is None:
                return  # another writer came first: look again next tick
            version = claimed
            message = (
                f"{len(plan.missed)} run(s) up to {rfc3339(plan.missed[-1])} missed: older than "
                f"startingDeadlineSeconds ({schedule.starting_deadline_seconds}s) when the operator could "
                "run them"
            )
            post_event(fresh, Event("Warning", ScheduleReason.RUN_MISSED, message))
        for index, at in enumerate(plan.due):
            following = plan.due[index + 1] if index + 1 < len(plan.due) else plan.next_time
            claimed = await asyncio.to_thread(
                kube().claim_job_type_status, namespace, name, run_claim(at, following, version)
            )
            if claimed is None or not ACTIVITY.is_active():
                return
            version = claimed
            await _enqueue_run(fresh, schedule, at)

    def _schedule_of(self, body: dict[str, Any] | None) -> Schedule | None:
        """The JobType's schedule when it can run; an invalid one is reported once per generation."""
        if body is None:
            return None
        try:
            spec = JobTypeSpec.model_validate(body["spec"])
        except ValidationError:
            return None  # the pools that serve it report what is wrong
        if spec.schedule is None:
            return None
        problem = schedule_problem(spec.schedule)
        if problem is None:
            return spec.schedule
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        generation = int(body["metadata"].get("generation", 0))
        if self._warned.get(key) != generation:
            self._warned[key] = generation
            post_event(
                body, Event("Warning", ScheduleReason.INVALID_SCHEDULE, f"{problem}; no run is enqueued")
            )
        return None


SCHEDULES = Schedules()
ACTIVITY.listen(SCHEDULES.on_activity)


@kopf.on.event(GROUP, VERSION, "jobtypes", when=served)
async def scheduled_job_type_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
    SCHEDULES.remember(type, json.loads(json.dumps(dict(body))))


@kopf.on.cleanup()
async def stop_schedules(**_: Any) -> None:
    await SCHEDULES.stop()
