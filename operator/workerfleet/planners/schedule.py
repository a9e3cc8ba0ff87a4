"""When a scheduled JobType's runs are due, and the job each run enqueues. Pure: a schedule, times and
the JobType's status in; the runs to enqueue, the ones missed past their deadline, and the next time out.

Runs are counted from `status.lastScheduleTime` (the latest run enqueued or skipped), else from the
JobType's creation. Every scheduled time after that and up to now is a run: enqueued while at most
`startingDeadlineSeconds` old, else skipped. So an operator that was down (a failover) catches up each
run within the deadline once, in order, and never one twice: each is claimed in the JobType's status,
with its resourceVersion, before its job is enqueued.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from workerfleet.api.jobtype import Schedule

SCHEDULED_TIME = "$(scheduledTime)"
"""In a schedule's payload, replaced by the run's time."""
MAX_RUNS_PER_LOOK = 1000
"""The most scheduled times one look walks (a schedule every second, missed for 16 minutes)."""


def schedule_problem(schedule: Schedule) -> str | None:
    """Why the schedule cannot run as written, naming the field; None when it can."""
    try:
        ZoneInfo(schedule.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"schedule.timeZone {schedule.time_zone!r} is not an IANA time zone such as Europe/Berlin"
    if not croniter.is_valid(schedule.cron):
        return (
            f"schedule.cron {schedule.cron!r} is not cron syntax: five fields (minute hour day-of-month "
            "month day-of-week), or six with seconds last"
        )
    return None


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The first scheduled time strictly after `after`, in UTC."""
    local = after.astimezone(ZoneInfo(schedule.time_zone))
    found: datetime = croniter(schedule.cron, local).get_next(datetime)
    return found.astimezone(UTC)


@dataclass(frozen=True)
class RunPlan:
    due: list[datetime] = field(default_factory=list)
    """Runs to enqueue now, oldest first."""
    missed: list[datetime] = field(default_factory=list)
    """Runs older than the starting deadline: skipped, never enqueued."""
    next_time: datetime | None = None
    """The first run after now."""


def plan_runs(schedule: Schedule, last: datetime | None, created: datetime, now: datetime) -> RunPlan:
    """The runs after `last` (else after `created`) up to `now`, split by the starting deadline."""
    due: list[datetime] = []
    missed: list[datetime] = []
    moment = next_run(schedule, last or created)
    for _ in range(MAX_RUNS_PER_LOOK):
        if moment > now:
            break
        late = (now - moment).total_seconds() > schedule.starting_deadline_seconds
        (missed if late else due).append(moment)
        moment = next_run(schedule, moment)
    return RunPlan(due, missed, moment if moment > now else None)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rendered(value: Any, at: str) -> Any:
    if isinstance(value, str):
        return value.replace(SCHEDULED_TIME, at)
    if isinstance(value, list):
        return [_rendered(item, at) for item in value]
    if isinstance(value, dict):
        return {key: _rendered(item, at) for key, item in value.items()}
    return value


def run_envelope(job_type: str, schedule: Schedule, at: datetime) -> dict[str, Any]:
    """The job one run enqueues, as the worker runtime reads it (workerfleet.worker.envelope): its id
    names the JobType and the run, so a run is recognisable wherever it went; enqueuedAt is the run's
    time, so deadlines count from it."""
    moment = rfc3339(at)
    return {
        "id": f"{job_type}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}",
        "type": job_type,
        "payload": _rendered(schedule.payload, moment),
        "enqueuedAt": moment,
        "attempt": 1,
    }


def run_claim(last: datetime, next_time: datetime | None, resource_version: str) -> dict[str, Any]:
    """The status patch that claims the runs up to `last`: it fails (409) if another replica wrote the
    JobType since it was read at `resource_version`."""
    status: dict[str, Any] = {"lastScheduleTime": rfc3339(last)}
    if next_time is not None:
        status["nextScheduleTime"] = rfc3339(next_time)
    return {"metadata": {"resourceVersion": resource_version}, "status": status}


def forbidden_by_backlog(pool_status: Mapping[str, Any]) -> bool:
    """Forbid's test: the pool's queue had jobs waiting at the operator's last read."""
    depth = (pool_status.get("queue") or {}).get("depth")
    return isinstance(depth, int) and depth > 0
