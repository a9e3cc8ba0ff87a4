"""When a scheduled JobType's runs are due, which are missed, and the job each run enqueues."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from workerfleet.api.jobtype import Schedule
from workerfleet.planners.schedule import (
    forbidden_by_backlog,
    next_run,
    plan_runs,
    run_claim,
    run_envelope,
    schedule_problem,
)
from workerfleet.worker.envelope import decode

T0 = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
EVERY_10S = Schedule(cron="* * * * * */10", starting_deadline_seconds=25)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("last", "now", "due", "missed", "following"),
    [
        (at(0), at(5), [], [], at(10)),  # nothing due yet
        (at(0), at(10), [at(10)], [], at(20)),  # on time
        (at(0), at(31), [at(10), at(20), at(30)], [], at(40)),  # a failover: each run caught up, in order
        (at(0), at(50), [at(30), at(40), at(50)], [at(10), at(20)], at(60)),  # older than the deadline
        (None, at(12), [at(10)], [], at(20)),  # no run yet: counted from the JobType's creation
    ],
)
def test_runs_after_the_last_one_are_due_within_the_deadline_and_missed_past_it(
    last: datetime | None, now: datetime, due: list[datetime], missed: list[datetime], following: datetime
) -> None:
    plan = plan_runs(EVERY_10S, last, created=at(1), now=now)
    assert (plan.due, plan.missed, plan.next_time) == (due, missed, following)


def test_a_run_once_claimed_is_never_due_again() -> None:
    first = plan_runs(EVERY_10S, at(0), created=at(0), now=at(21))
    assert plan_runs(EVERY_10S, first.due[-1], created=at(0), now=at(21)).due == []


def test_the_cron_fields_are_read_in_the_time_zone_across_daylight_saving() -> None:
    # 02:30 every day in Berlin: in winter 01:30 UTC; after the switch on 29 March 2026, 00:30 UTC
    nightly = Schedule(cron="30 2 * * *", time_zone="Europe/Berlin")
    assert next_run(nightly, datetime(2026, 3, 27, 12, tzinfo=UTC)) == datetime(
        2026, 3, 28, 1, 30, tzinfo=UTC
    )
    assert next_run(nightly, datetime(2026, 3, 30, 12, tzinfo=UTC)) == datetime(
        2026, 3, 31, 0, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        (Schedule(cron="*/5 * * * *"), None),
        (Schedule(cron="* * * * * */10"), None),
        (Schedule(cron="every minute"), "schedule.cron 'every minute' is not cron syntax"),
        (
            Schedule(cron="*/5 * * * *", time_zone="Mars/Olympus"),
            "schedule.timeZone 'Mars/Olympus' is not an IANA",
        ),
    ],
)
def test_a_schedule_that_cannot_run_is_named_by_its_field(schedule: Schedule, problem: str | None) -> None:
    found = schedule_problem(schedule)
    assert found == problem if problem is None else found is not None and found.startswith(problem)


def test_a_run_is_a_job_the_worker_runtime_reads_with_the_runs_time_in_its_payload() -> None:
    schedule = Schedule(cron="0 * * * *", payload={"report": "daily", "window": {"end": "$(scheduledTime)"}})
    envelope = decode(json.dumps(run_envelope("export", schedule, at(3600))).encode())
    assert envelope.id == "export-20260329T000000Z"
    assert envelope.type == "export"
    assert envelope.payload == {"report": "daily", "window": {"end": "2026-03-29T00:00:00Z"}}
    assert envelope.enqueued_at == at(3600)
    assert envelope.attempt == 1


def test_a_claim_names_the_version_it_was_planned_on() -> None:
    assert run_claim(at(10), at(20), "42") == {
        "metadata": {"resourceVersion": "42"},
        "status": {"lastScheduleTime": "2026-03-28T23:00:10Z", "nextScheduleTime": "2026-03-28T23:00:20Z"},
    }


@pytest.mark.parametrize(
    ("status", "forbidden"),
    [({"queue": {"depth": 3}}, True), ({"queue": {"depth": 0}}, False), ({}, False)],
)
def test_forbid_holds_a_run_back_only_while_jobs_wait(status: dict[str, object], forbidden: bool) -> None:
    assert forbidden_by_backlog(status) is forbidden
