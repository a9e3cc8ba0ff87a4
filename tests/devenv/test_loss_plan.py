"""The loss checker's pure parts: the schedule from a seed, and the verdict over ledger and queues."""

from __future__ import annotations

from collections import Counter

import pytest

from devenv.hostile import HostileKind, every_kind
from devenv.loss.plan import (
    FULL,
    SHORT,
    Event,
    Fault,
    FaultEvent,
    HostilePlan,
    JobPlan,
    Kind,
    Profile,
    Record,
    Schedule,
    parse_ledger,
    schedule,
    table,
    verdict,
)


def test_a_seed_gives_the_same_jobs_and_faults_every_time() -> None:
    assert schedule(42, SHORT) == schedule(42, SHORT)
    assert schedule(42, SHORT) != schedule(43, SHORT)
    assert schedule(42, SHORT).describe() == schedule(42, SHORT).describe()
    assert "seed 42" in schedule(42, SHORT).describe()


@pytest.mark.parametrize("profile", [SHORT, FULL])
def test_a_schedule_has_every_kind_one_restart_one_change_and_kills_inside_the_window(
    profile: Profile,
) -> None:
    plan = schedule(7, profile)
    assert len(plan.jobs) == profile.jobs
    assert len({job.id for job in plan.jobs}) == len(plan.jobs)
    assert {job.kind for job in plan.jobs} == set(Kind)
    faults = [event.fault for event in plan.faults]
    assert faults.count(Fault.RESTART_QUEUE) == 1
    assert faults.count(Fault.CHANGE_JOB_TYPE) == 1
    kills = [event.at_seconds for event in plan.faults if event.fault is Fault.KILL]
    assert len(kills) >= 5
    assert max(kills) <= profile.kill_for_seconds
    assert [event.at_seconds for event in plan.faults] == sorted(event.at_seconds for event in plan.faults)
    assert all(0 < job.fail_times < 4 for job in plan.jobs if job.kind is Kind.TRANSIENT)
    assert sum(1 for job in plan.jobs if job.kind is Kind.POISON) <= profile.max_poison


@pytest.mark.parametrize(
    ("pick", "running", "chosen"),
    [
        (0.0, ["b", "a", "c"], "a"),
        (0.5, ["b", "a", "c"], "b"),
        (0.999, ["b", "a", "c"], "c"),
        (0.3, [], None),
    ],
)
def test_a_kill_picks_among_the_running_workers_by_name(
    pick: float, running: list[str], chosen: str | None
) -> None:
    plan = Schedule(seed=1, jobs=(), faults=())
    assert plan.pick(FaultEvent(1.0, Fault.KILL, pick), running) == chosen


def test_only_keyed_jobs_carry_a_key_and_their_own_job_type() -> None:
    keyed, plain = JobPlan("j1", Kind.KEYED), JobPlan("j2", Kind.TRANSIENT, fail_times=2)
    assert keyed.payload(0.1) == {"kind": "keyed", "seconds": 0.1, "key": "j1"}
    assert plain.payload(0.1) == {"kind": "transient", "seconds": 0.1, "failTimes": 2}
    assert keyed.job_type != plain.job_type


JOBS = (
    JobPlan("plain", Kind.PLAIN),
    JobPlan("keyed", Kind.KEYED),
    JobPlan("poison", Kind.POISON),
    JobPlan("late", Kind.EXPIRING),
    JobPlan("unsure", Kind.REVIEW),
)
PLAN = Schedule(seed=9, jobs=JOBS, faults=())
DEAD = [("poison", "Crashed"), ("late", "DeadlineExceeded")]


def effect(job: str, at: float, pid: int) -> Record:
    return Record(Event.EFFECT, at, pid, job, 1)


def clean_ledger() -> list[Record]:
    return [
        Record(Event.START, 1.0, 10, "plain", 1),
        effect("plain", 1.1, 10),
        Record(Event.START, 1.2, 10, "keyed", 1),
        effect("keyed", 1.3, 10),
    ]


def test_every_job_ending_once_is_a_clean_verdict() -> None:
    result = verdict("redis-list", PLAN, clean_ledger(), DEAD, ["unsure"], leftover_depth=0)
    assert result.ok, result.problems()
    assert dict(result.ends) == {"done": 2, "dead-lettered:Crashed": 1, "expired": 1, "review": 1}
    assert result.unexpected_route == []
    assert result.row()["lost"] == 0
    assert result.invocations == 2


@pytest.mark.parametrize(("leftover", "lost", "stranded"), [(0, 1, 0), (3, 0, 1)])
def test_a_job_with_no_end_is_lost_unless_the_queue_still_holds_jobs(
    leftover: int, lost: int, stranded: int
) -> None:
    result = verdict("redis-list", PLAN, clean_ledger(), DEAD, [], leftover_depth=leftover)
    assert not result.ok
    assert len(result.lost) == lost
    assert len(result.stranded) == stranded
    assert [finding.job for finding in result.lost + result.stranded] == ["unsure"]


def test_a_job_done_and_dead_lettered_ended_twice() -> None:
    result = verdict(
        "rabbitmq", PLAN, clean_ledger(), [*DEAD, ("plain", "Crashed")], ["unsure"], leftover_depth=0
    )
    assert [finding.job for finding in result.conflicting] == ["plain"]
    assert not result.ok


def test_an_id_nobody_sent_is_reported() -> None:
    result = verdict("rabbitmq", PLAN, clean_ledger(), [*DEAD, ("stranger", "Crashed")], ["unsure"], 0)
    assert [finding.job for finding in result.conflicting] == ["stranger"]


def test_a_plain_job_run_twice_is_an_at_least_once_duplicate_not_a_failure() -> None:
    ledger = [*clean_ledger(), effect("plain", 2.0, 11)]
    result = verdict("redis-stream", PLAN, ledger, DEAD, ["unsure"], 0)
    assert result.ok
    assert result.duplicates == 1
    assert result.extra_effects == 1


def test_a_keyed_effect_applied_twice_fails_unless_its_first_worker_died_before_the_ack() -> None:
    # The worker that applied the effect went on to another job: it had acknowledged, so the second
    # effect is a duplicate the runtime should have prevented
    later_work = [*clean_ledger(), Record(Event.START, 1.5, 10, "plain", 2), effect("keyed", 3.0, 12)]
    result = verdict("redis-list", PLAN, later_work, DEAD, ["unsure"], 0)
    assert [finding.job for finding in result.keyed_duplicates] == ["keyed"]
    assert not result.ok
    # The worker was SIGKILLed right after the effect, before anything else: the ack never happened
    killed = [*clean_ledger(), Record(Event.KILLED, 1.35, 10), effect("keyed", 3.0, 12)]
    result = verdict("redis-list", PLAN, killed, DEAD, ["unsure"], 0)
    assert result.ok, result.problems()
    assert result.keyed_redone_after_kill == 1
    # A kill long before the effect explains nothing
    early_kill = [Record(Event.KILLED, 0.5, 10), *clean_ledger(), effect("keyed", 3.0, 12)]
    assert not verdict("redis-list", PLAN, early_kill, DEAD, ["unsure"], 0).ok


def test_a_job_off_its_usual_route_is_reported_not_failed() -> None:
    ledger = clean_ledger()
    result = verdict("redis-list", PLAN, ledger, [*DEAD[:1], ("unsure", "Crashed")], [], 0)
    assert len(result.lost) == 1  # "late" has no end here
    routed = verdict("redis-list", PLAN, ledger, [*DEAD, ("unsure", "Crashed")], [], 0)
    assert routed.ok
    assert [finding.job for finding in routed.unexpected_route] == ["unsure"]


def test_a_torn_last_line_of_the_ledger_is_skipped() -> None:
    text = "\n".join(record.line() for record in clean_ledger()) + '\n{"event":"start","at":'
    assert parse_ledger(text) == clean_ledger()


def test_the_table_has_a_row_per_backend() -> None:
    rows = [
        verdict(name, PLAN, clean_ledger(), DEAD, ["unsure"], 0).row() for name in ("redis-list", "rabbitmq")
    ]
    lines = table(rows).splitlines()
    assert lines[0].startswith("| backend | jobs | done |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| redis-list", "| rabbitmq"]
    assert "0→0→0" in lines[2]


def test_without_atomic_settling_a_dead_letter_written_twice_and_a_keyed_rerun_are_reported_not_failed() -> (
    None
):
    twice = [*DEAD, ("late", "DeadlineExceeded")]
    rerun = [*clean_ledger(), Record(Event.START, 1.5, 10, "plain", 2), effect("keyed", 3.0, 12)]
    atomic = verdict("redis-list", PLAN, rerun, twice, ["unsure"], 0)
    assert not atomic.ok
    assert [f.job for f in atomic.written_twice] == ["late"]
    assert [f.job for f in atomic.keyed_duplicates] == ["keyed"]
    assert len(atomic.problems()) == 2
    assert atomic.reported() == []
    rabbit = verdict("rabbitmq", PLAN, rerun, twice, ["unsure"], 0, atomic_settle=False, shared_keys=False)
    assert rabbit.ok, rabbit.problems()
    assert rabbit.row()["written_twice"] == 1
    assert rabbit.row()["keyed_rerun_without_shared_keys"] == 1
    assert rabbit.ends["expired"] == 1
    assert len(rabbit.reported()) == 2


def test_with_shared_keys_a_keyed_rerun_fails_even_where_settling_is_not_atomic() -> None:
    rerun = [*clean_ledger(), Record(Event.START, 1.5, 10, "plain", 2), effect("keyed", 3.0, 12)]
    twice = [*DEAD, ("late", "DeadlineExceeded")]
    with_store = verdict("rabbitmq", PLAN, rerun, twice, ["unsure"], 0, atomic_settle=False, shared_keys=True)
    assert not with_store.ok
    assert [f.job for f in with_store.keyed_duplicates] == ["keyed"]
    assert with_store.keyed_rerun == []
    assert with_store.problems() == [f"keyed effect duplicated: {with_store.keyed_duplicates[0].describe()}"]
    assert with_store.reported() == [f"same end written twice: {with_store.written_twice[0].describe()}"]


@pytest.mark.parametrize("profile", [SHORT, FULL])
def test_hostile_messages_of_every_kind_ride_along_at_seeded_places(profile: Profile) -> None:
    plan = schedule(7, profile)
    assert plan.hostile == schedule(7, profile).hostile
    assert Counter(planned.message.kind for planned in plan.hostile) == dict.fromkeys(
        HostileKind, profile.hostile_per_kind
    )
    assert all(0 <= planned.before_job < profile.jobs for planned in plan.hostile)
    assert len({planned.message.tag for planned in plan.hostile}) == len(plan.hostile)
    assert "7 hostile messages among them" in schedule(7, SHORT).describe()


HOSTILE = every_kind("h", job_type="loss-plain")[:2]
HOSTILE_PLAN = Schedule(
    seed=9, jobs=JOBS, faults=(), hostile=tuple(HostilePlan(0, message) for message in HOSTILE)
)
HOSTILE_DEAD = [(message.tag, message.expected_reason) for message in HOSTILE]


def test_hostile_messages_dead_lettered_with_their_reason_leave_the_verdict_clean() -> None:
    result = verdict("redis-list", HOSTILE_PLAN, clean_ledger(), [*DEAD, *HOSTILE_DEAD], ["unsure"], 0)
    assert result.ok, result.problems()
    assert dict(result.hostile_ends) == {"NestingTooDeep": 2}
    assert result.row()["hostile"] == "2/2"
    assert dict(result.ends) == {"done": 2, "dead-lettered:Crashed": 1, "expired": 1, "review": 1}


@pytest.mark.parametrize(
    ("dead", "extra_ledger", "problem"),
    [
        ([HOSTILE_DEAD[0], (HOSTILE[1].tag, "MalformedEnvelope")], [], "hostile message not dead-lettered"),
        (HOSTILE_DEAD, [Record(Event.START, 2.0, 10, HOSTILE[0].tag, 1)], "run at attempts [1]"),
        (HOSTILE_DEAD[:1], [], "lost: h-deep-payload"),
    ],
)
def test_a_hostile_message_off_its_route_fails_the_verdict(
    dead: list[tuple[str, str]], extra_ledger: list[Record], problem: str
) -> None:
    result = verdict(
        "redis-list", HOSTILE_PLAN, [*clean_ledger(), *extra_ledger], [*DEAD, *dead], ["unsure"], 0
    )
    assert not result.ok
    assert any(problem in line for line in result.problems()), result.problems()
