"""The pure parts of the loss checker: what to enqueue and when to break things (from a seed), and the
verdict over what the handlers wrote to the ledger and what the queues hold at the end.

Hostile messages (`devenv.hostile`: deep nesting, a 64 MiB body, invalid UTF-8, an over-long type, a
JSON array, an empty body) ride along in the job stream: each must end dead-lettered with its kind's
reason, while the good jobs' ledger stays exact.

A run is replayed exactly as far as these go: the same seed gives the same jobs (ids, kinds, payloads,
where the hostile messages go) and the same fault schedule (times, and which of the running workers
each kill picks). What the machine does between the faults (which worker took which job) is not in
the seed.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from devenv.hostile import HostileKind, HostileMessage

PLAIN_TYPE = "loss-plain"
"""The JobType of jobs without an idempotency key."""
KEYED_TYPE = "loss-keyed"
"""The JobType whose jobs carry an idempotency key (payload field `key`)."""
MAX_ATTEMPTS = 4


class Kind(StrEnum):
    """What a job's handler does, and so how the job must end."""

    PLAIN = "plain"
    """Runs and succeeds."""
    KEYED = "keyed"
    """Runs and succeeds; carries an idempotency key."""
    TRANSIENT = "transient"
    """Fails with a TransientError on its first `fail_times` attempts, then succeeds."""
    EXHAUSTED = "exhausted"
    """Fails with a TransientError on every attempt: dead-lettered after maxAttempts."""
    POISON = "poison"
    """SIGKILLs its own worker on every attempt: dead-lettered as crashed."""
    EXPIRING = "expiring"
    """Enqueued with a deadline already past: expires without running."""
    REVIEW = "review"
    """The handler asks for review (NeedsReview): goes to the review queue."""


SHARES: tuple[tuple[Kind, float], ...] = (
    (Kind.PLAIN, 0.50),
    (Kind.KEYED, 0.22),
    (Kind.TRANSIENT, 0.13),
    (Kind.EXHAUSTED, 0.03),
    (Kind.POISON, 0.02),
    (Kind.EXPIRING, 0.05),
    (Kind.REVIEW, 0.05),
)


class End(StrEnum):
    """Where a job may end; each job id must end in exactly one."""

    DONE = "done"
    DEAD_LETTERED = "dead-lettered"
    EXPIRED = "expired"
    REVIEW = "review"


EXPECTED_END: Mapping[Kind, tuple[End, str | None]] = {
    Kind.PLAIN: (End.DONE, None),
    Kind.KEYED: (End.DONE, None),
    Kind.TRANSIENT: (End.DONE, None),
    Kind.EXHAUSTED: (End.DEAD_LETTERED, "AttemptsExhausted"),
    Kind.POISON: (End.DEAD_LETTERED, "Crashed"),
    Kind.EXPIRING: (End.EXPIRED, "DeadlineExceeded"),
    Kind.REVIEW: (End.REVIEW, "NeedsReview"),
}
"""How each kind ends when nothing gets in its way (reported, not asserted: faults may change the
route, e.g. a job whose workers all die under it is dead-lettered as crashed, which is no loss)."""


@dataclass(frozen=True)
class Profile:
    """How big a run is and how hard it is shaken."""

    name: str
    jobs: int
    job_seconds: float
    max_replicas: int
    target_per_replica: int
    kill_every_seconds: float
    kill_for_seconds: float
    """Kills go on this long after the first job ran; then the pool drains unshaken."""
    restart_window: tuple[float, float]
    """The queue server restarts at a seeded time in this window (seconds after the first job is run)."""
    change_window: tuple[float, float]
    """The JobType change is applied at a seeded time in this window."""
    max_poison: int = 2
    """At most this many poison jobs (each takes its worker down maxAttempts + 1 times, and a worker
    process takes seconds to start again); further poison draws become plain jobs."""
    cooldown_seconds: int = 5
    drain_timeout_seconds: float = 600.0
    hostile_per_kind: int = 1
    """Hostile messages of each kind mixed into the jobs, each dead-lettered on its first delivery."""


SHORT = Profile(
    name="short",
    jobs=150,
    job_seconds=0.1,
    max_replicas=3,
    target_per_replica=20,
    kill_every_seconds=4.0,
    kill_for_seconds=30.0,
    restart_window=(4.0, 8.0),
    change_window=(2.0, 5.0),
    drain_timeout_seconds=300.0,
)
FULL = Profile(
    name="full",
    jobs=5000,
    job_seconds=0.05,
    max_replicas=6,
    target_per_replica=100,
    kill_every_seconds=3.0,
    kill_for_seconds=150.0,
    restart_window=(20.0, 60.0),
    change_window=(10.0, 40.0),
    max_poison=10,
    drain_timeout_seconds=1800.0,
    hostile_per_kind=3,
)
PROFILES = {profile.name: profile for profile in (SHORT, FULL)}


@dataclass(frozen=True)
class JobPlan:
    id: str
    kind: Kind
    fail_times: int = 0

    @property
    def job_type(self) -> str:
        return KEYED_TYPE if self.kind is Kind.KEYED else PLAIN_TYPE

    def payload(self, job_seconds: float) -> dict[str, Any]:
        payload: dict[str, Any] = {"kind": self.kind.value, "seconds": job_seconds}
        if self.kind is Kind.KEYED:
            payload["key"] = self.id
        if self.fail_times:
            payload["failTimes"] = self.fail_times
        return payload


class Fault(StrEnum):
    KILL = "kill"
    """SIGKILL one running worker process (`pick` chooses among them, sorted by name)."""
    RESTART_QUEUE = "restart-queue"
    """Stop the queue server hard and start it again on the same port and data."""
    CHANGE_JOB_TYPE = "change-job-type"
    """Change a JobType's policy; the operator rolls the workers onto it."""


@dataclass(frozen=True)
class FaultEvent:
    at_seconds: float
    fault: Fault
    pick: float = 0.0

    def describe(self) -> str:
        extra = f" pick={self.pick:.3f}" if self.fault is Fault.KILL else ""
        return f"t+{self.at_seconds:6.1f}s {self.fault.value}{extra}"


@dataclass(frozen=True)
class HostilePlan:
    before_job: int
    """Enqueued right before this job (its index in Schedule.jobs)."""
    message: HostileMessage


@dataclass(frozen=True)
class Schedule:
    seed: int
    jobs: tuple[JobPlan, ...]
    faults: tuple[FaultEvent, ...]
    """Ordered by time; kills every few seconds for the profile's kill_for_seconds (fewer when every job
    ended sooner)."""
    hostile: tuple[HostilePlan, ...] = ()
    """Ordered by position in the job stream."""

    def hostile_before(self, index: int) -> list[HostileMessage]:
        return [planned.message for planned in self.hostile if planned.before_job == index]

    def describe(self, kills_shown: int = 8) -> str:
        kinds = Counter(job.kind.value for job in self.jobs)
        lines = [
            f"seed {self.seed}: {len(self.jobs)} jobs "
            + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
            + (f"; {len(self.hostile)} hostile messages among them" if self.hostile else "")
        ]
        kills = 0
        for event in self.faults:
            if event.fault is Fault.KILL:
                kills += 1
                if kills > kills_shown:
                    continue
            lines.append("  " + event.describe())
        if kills > kills_shown:
            lines.append(f"  ... and a kill every ~{self._kill_spacing():.1f}s after that")
        return "\n".join(lines)

    def _kill_spacing(self) -> float:
        times = [event.at_seconds for event in self.faults if event.fault is Fault.KILL]
        return (times[-1] - times[0]) / max(len(times) - 1, 1) if times else 0.0

    def pick(self, event: FaultEvent, running: Sequence[str]) -> str | None:
        """The worker a kill takes among the running ones (None when none runs)."""
        names = sorted(running)
        if not names:
            return None
        return names[min(int(event.pick * len(names)), len(names) - 1)]


def schedule(seed: int, profile: Profile) -> Schedule:
    """Jobs and faults for a run: the same seed and profile give the same schedule."""
    rng = random.Random(seed)  # noqa: S311  (replayable from the seed, not a secret)
    kinds = [kind for kind, _ in SHARES]
    weights = [share for _, share in SHARES]
    jobs: list[JobPlan] = []
    poison = 0
    for number in range(profile.jobs):
        kind = rng.choices(kinds, weights)[0]
        if kind is Kind.POISON:
            poison += 1
            kind = Kind.POISON if poison <= profile.max_poison else Kind.PLAIN
        fail_times = 0
        if kind is Kind.TRANSIENT:
            fail_times = rng.randint(1, MAX_ATTEMPTS - 1)
        elif kind is Kind.EXHAUSTED:
            fail_times = MAX_ATTEMPTS + 1
        jobs.append(JobPlan(id=f"s{seed}-{number:05d}", kind=kind, fail_times=fail_times))
    faults = [
        FaultEvent(rng.uniform(*profile.restart_window), Fault.RESTART_QUEUE),
        FaultEvent(rng.uniform(*profile.change_window), Fault.CHANGE_JOB_TYPE),
    ]
    at = 0.0
    while True:
        at += profile.kill_every_seconds * rng.uniform(0.5, 1.5)
        if at > profile.kill_for_seconds:
            break
        faults.append(FaultEvent(round(at, 3), Fault.KILL, pick=rng.random()))
    faults.sort(key=lambda event: event.at_seconds)
    hostile = [
        HostilePlan(
            rng.randrange(profile.jobs), HostileMessage(kind, f"s{seed}-hostile-{number}-{kind.value}")
        )
        for number in range(profile.hostile_per_kind)
        for kind in HostileKind
    ]
    hostile.sort(key=lambda planned: planned.before_job)
    return Schedule(seed=seed, jobs=tuple(jobs), faults=tuple(faults), hostile=tuple(hostile))


# --- the ledger ----------------------------------------------------------------------------------


class Event(StrEnum):
    START = "start"
    """A handler invocation began (every attempt that reached the handler)."""
    EFFECT = "effect"
    """The handler's effect was applied (the last thing a succeeding handler does)."""
    KILLED = "killed"
    """The harness SIGKILLed this pid."""
    SELF_KILLED = "self-killed"
    """A poison job's handler is about to SIGKILL its own worker."""


@dataclass(frozen=True)
class Record:
    event: Event
    at: float
    pid: int
    job: str = ""
    attempt: int = 0

    def line(self) -> str:
        return json.dumps(
            {
                "event": self.event.value,
                "at": self.at,
                "pid": self.pid,
                "job": self.job,
                "attempt": self.attempt,
            },
            separators=(",", ":"),
        )


def parse_ledger(text: str) -> list[Record]:
    """Every complete line of the ledger; a torn last line (its writer killed mid-write) is skipped."""
    records = []
    for line in text.splitlines():
        try:
            fields = json.loads(line)
        except ValueError:
            continue
        records.append(
            Record(
                Event(fields["event"]),
                float(fields["at"]),
                int(fields["pid"]),
                fields["job"],
                fields["attempt"],
            )
        )
    return records


# --- the verdict ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    job: str
    kind: Kind | HostileKind
    problem: str

    def describe(self) -> str:
        return f"{self.job} ({self.kind.value}): {self.problem}"


@dataclass
class Verdict:
    backend: str
    seed: int
    jobs: int
    ends: Counter[str] = field(default_factory=Counter)
    """Jobs per end ("done", "dead-lettered:Crashed", "expired", "review", ...)."""
    lost: list[Finding] = field(default_factory=list)
    stranded: list[Finding] = field(default_factory=list)
    atomic_settle: bool = True
    """Whether the backend settles a job in one atomic step (Redis: one Lua script). Not RabbitMQ: the
    publish to a dead-letter queue and the ack are two steps, and the broker does not confirm an ack; a
    worker that dies or loses its connection after the first step leaves the job to be delivered again,
    so a dead letter can be written twice (reported, not failed)."""
    shared_keys: bool = True
    """Whether completed idempotency keys are stored where every worker sees them, before the job is
    acknowledged (Redis: with the ack; RabbitMQ: in the pool's idempotencyStore). Without (a RabbitMQ
    pool without a store), keys live in each worker process, and a keyed job delivered again to another
    worker runs again: reported, not failed."""
    conflicting: list[Finding] = field(default_factory=list)
    """Jobs that ended in more than one place."""
    hostile: int = 0
    """Hostile messages sent among the jobs."""
    hostile_ends: Counter[str] = field(default_factory=Counter)
    """Hostile messages dead-lettered with their kind's reason, by reason."""
    hostile_misrouted: list[Finding] = field(default_factory=list)
    """Hostile messages that ended anywhere but dead-lettered with their kind's reason."""
    written_twice: list[Finding] = field(default_factory=list)
    """Jobs whose one end was recorded twice (the same dead letter twice): a failure where settling is
    atomic, an at-least-once duplicate (reported) where it is not."""
    keyed_duplicates: list[Finding] = field(default_factory=list)
    """Keyed jobs whose effect was applied again where the runtime should have prevented it."""
    keyed_rerun: list[Finding] = field(default_factory=list)
    """Keyed jobs run again where completed keys are not shared (reported, not failed)."""
    keyed_redone_after_kill: int = 0
    """Keyed jobs whose effect was applied again because the worker that applied it first was SIGKILLed
    before it could acknowledge (between the handler's return and the ack; no queue can tell)."""
    duplicates: int = 0
    """Jobs without a key whose effect was applied more than once (at-least-once delivery)."""
    extra_effects: int = 0
    """Effects applied beyond the first, over all jobs."""
    unexpected_route: list[Finding] = field(default_factory=list)
    """Jobs that ended somewhere other than their kind's usual end (allowed; reported)."""
    invocations: int = 0
    kills: int = 0
    leftover_depth: int = 0
    drain_seconds: float = 0.0
    peak_replicas: int = 0
    final_replicas: int = 0
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        twice = self.written_twice if self.atomic_settle else []
        return not (
            self.lost
            or self.stranded
            or self.conflicting
            or twice
            or self.keyed_duplicates
            or self.hostile_misrouted
        )

    def problems(self) -> list[str]:
        found = []
        for label, findings in (
            ("lost", self.lost),
            ("stranded", self.stranded),
            ("ended twice", self.conflicting),
            ("same end written twice", self.written_twice if self.atomic_settle else []),
            ("keyed effect duplicated", self.keyed_duplicates),
            ("hostile message not dead-lettered with its reason", self.hostile_misrouted),
        ):
            found += [f"{label}: {finding.describe()}" for finding in findings]
        return found

    def reported(self) -> list[str]:
        """At-least-once findings, allowed but named: the same end written twice where the backend does
        not settle atomically, a keyed job run again where completed keys are not shared."""
        twice = [] if self.atomic_settle else self.written_twice
        return [f"same end written twice: {finding.describe()}" for finding in twice] + [
            f"keyed job run again: {finding.describe()}" for finding in self.keyed_rerun
        ]

    def row(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "seed": self.seed,
            "jobs": self.jobs,
            "done": self.ends.get(End.DONE.value, 0),
            "dead_lettered": sum(
                n for end, n in self.ends.items() if end.startswith(End.DEAD_LETTERED.value)
            ),
            "expired": self.ends.get(End.EXPIRED.value, 0),
            "review": self.ends.get(End.REVIEW.value, 0),
            "lost": len(self.lost),
            "stranded": len(self.stranded),
            "ended_twice": len(self.conflicting),
            "written_twice": len(self.written_twice),
            "keyed_duplicated": len(self.keyed_duplicates),
            "hostile": f"{sum(self.hostile_ends.values())}/{self.hostile}",
            "keyed_rerun_without_shared_keys": len(self.keyed_rerun),
            "keyed_redone_after_kill": self.keyed_redone_after_kill,
            "at_least_once_duplicates": self.duplicates,
            "kills": self.kills,
            "peak_replicas": self.peak_replicas,
            "final_replicas": self.final_replicas,
            "drain_seconds": round(self.drain_seconds, 1),
            "ends": dict(sorted(self.ends.items())),
        }


def verdict(  # noqa: PLR0917  (the inputs of one verdict, each named at the call)
    backend: str,
    plan: Schedule,
    records: Iterable[Record],
    dead_letters: Iterable[tuple[str, str]],
    review: Iterable[str],
    leftover_depth: int,
    *,
    atomic_settle: bool = True,
    shared_keys: bool = True,
) -> Verdict:
    """Account for every job id: its end from the ledger (done = its effect applied) and the dead-letter
    and review queues (with the reason in lastFailure), then what went wrong.

    `dead_letters` are (job id, lastFailure reason) pairs, `review` the ids in the review queue,
    `leftover_depth` what the queue still holds (waiting, in flight, delayed) once the run ended: with
    any left, jobs without an end are stranded; with none, they are lost. `atomic_settle`, `shared_keys`:
    see Verdict.
    """
    ledger = _Ledger(list(records))
    ends: dict[str, list[tuple[End, str | None]]] = {}
    for job_id in ledger.effects:
        ends.setdefault(job_id, []).append((End.DONE, None))
    for job_id, reason in dead_letters:
        end = End.EXPIRED if reason == "DeadlineExceeded" else End.DEAD_LETTERED
        ends.setdefault(job_id, []).append((end, reason))
    for job_id in review:
        ends.setdefault(job_id, []).append((End.REVIEW, "NeedsReview"))
    result = Verdict(
        backend=backend,
        seed=plan.seed,
        jobs=len(plan.jobs),
        hostile=len(plan.hostile),
        invocations=sum(1 for r in ledger.records if r.event is Event.START),
        kills=len({r.pid for r in ledger.records if r.event is Event.KILLED}),
        leftover_depth=leftover_depth,
        atomic_settle=atomic_settle,
        shared_keys=shared_keys,
    )
    sent = {job.id for job in plan.jobs} | {planned.message.tag for planned in plan.hostile}
    for job_id in sorted(set(ends) - sent):
        result.conflicting.append(Finding(job_id, Kind.PLAIN, "an id the producer never sent"))
    for job in plan.jobs:
        _account_for(job, ends.get(job.id, []), ledger, result)
    for planned in plan.hostile:
        _account_for_hostile(planned.message, ends.get(planned.message.tag, []), ledger, result)
    return result


@dataclass(frozen=True)
class _Ledger:
    records: list[Record]
    effects: dict[str, list[Record]] = field(default_factory=dict)
    by_pid: dict[int, list[Record]] = field(default_factory=dict)
    killed: dict[int, float] = field(default_factory=dict)
    """When each killed pid was first killed (by the harness, or by its own poison job)."""

    def __post_init__(self) -> None:
        for record in self.records:
            self.by_pid.setdefault(record.pid, []).append(record)
            if record.event is Event.EFFECT:
                self.effects.setdefault(record.job, []).append(record)
            elif record.event in (Event.KILLED, Event.SELF_KILLED):
                self.killed[record.pid] = min(self.killed.get(record.pid, record.at), record.at)

    def attempts(self, job_id: str) -> list[int]:
        return sorted({r.attempt for r in self.records if r.job == job_id and r.event is Event.START})

    def redone_after_kill(self, effects: Sequence[Record]) -> bool:
        """Every repeat of an effect follows an earlier one whose worker was killed before doing anything
        else: it died between the handler's return and the acknowledgement."""
        for earlier in effects[:-1]:
            kill_at = self.killed.get(earlier.pid)
            if kill_at is None or kill_at < earlier.at:
                return False
            if any(
                earlier.at < r.at <= kill_at and r.event is not Event.KILLED for r in self.by_pid[earlier.pid]
            ):
                return False
        return True


def _no_end(job_id: str, kind: Kind | HostileKind, ledger: _Ledger, result: Verdict) -> None:
    """Stranded while the queue still holds jobs, else lost."""
    attempts = ledger.attempts(job_id)
    where = f"invoked at attempts {attempts}" if attempts else "never invoked"
    if result.leftover_depth:
        problem = f"no end, {where}; the queue still holds {result.leftover_depth}"
        result.stranded.append(Finding(job_id, kind, problem))
    else:
        result.lost.append(Finding(job_id, kind, f"no end and not on the queue, {where}"))


def _account_for_hostile(
    message: HostileMessage, found: list[tuple[End, str | None]], ledger: _Ledger, result: Verdict
) -> None:
    """A hostile message ends dead-lettered with its kind's reason, once (twice only where settling is not
    atomic, as any dead letter), and never reaches a handler."""
    if not found:
        _no_end(message.tag, message.kind, ledger, result)
        return
    expected = (End.DEAD_LETTERED, message.expected_reason)
    attempts = ledger.attempts(message.tag)
    if set(found) != {expected} or attempts:
        ended = ", ".join(f"{end.value}({reason})" for end, reason in found)
        ran = f", run at attempts {attempts}" if attempts else ""
        problem = f"ended as {ended}{ran}; expected dead-lettered({message.expected_reason})"
        result.hostile_misrouted.append(Finding(message.tag, message.kind, problem))
        return
    if len(found) > 1:
        result.written_twice.append(Finding(message.tag, message.kind, f"dead-lettered {len(found)} times"))
    result.hostile_ends[message.expected_reason] += 1


def _account_for(job: JobPlan, found: list[tuple[End, str | None]], ledger: _Ledger, result: Verdict) -> None:
    if not found:
        _no_end(job.id, job.kind, ledger, result)
        return
    ended = ", ".join(f"{end.value}({reason})" for end, reason in found)
    if len(set(found)) > 1:
        result.conflicting.append(Finding(job.id, job.kind, f"ended as {ended}"))
        return
    if len(found) > 1:
        result.written_twice.append(Finding(job.id, job.kind, f"ended as {ended}"))
    end, reason = found[0]
    result.ends[end.value if end is not End.DEAD_LETTERED else f"{end.value}:{reason}"] += 1
    if (end, reason) != EXPECTED_END[job.kind]:
        result.unexpected_route.append(Finding(job.id, job.kind, f"ended as {end.value}({reason})"))
    applied = ledger.effects.get(job.id, [])
    if len(applied) <= 1:
        return
    result.extra_effects += len(applied) - 1
    if job.kind is not Kind.KEYED:
        result.duplicates += 1
    elif ledger.redone_after_kill(applied):
        result.keyed_redone_after_kill += 1
    else:
        pids = [r.pid for r in applied]
        finding = Finding(job.id, job.kind, f"effect applied {len(applied)} times, by pids {pids}")
        (result.keyed_duplicates if result.shared_keys else result.keyed_rerun).append(finding)


COLUMNS: tuple[tuple[str, str], ...] = (
    ("backend", "backend"),
    ("jobs", "jobs"),
    ("done", "done"),
    ("dead_lettered", "dead-lettered"),
    ("expired", "expired"),
    ("review", "review"),
    ("lost", "lost"),
    ("stranded", "stranded"),
    ("written_twice", "end written twice"),
    ("keyed_duplicated", "keyed dup."),
    ("hostile", "hostile dead-lettered"),
    ("keyed_rerun_without_shared_keys", "keyed re-run"),
    ("at_least_once_duplicates", "at-least-once dup."),
    ("kills", "SIGKILLs"),
    ("peak_replicas", "replicas 0→N→0"),
    ("drain_seconds", "drain s"),
)


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of verdict rows (also what the README shows)."""
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "| " + " | ".join("---" for _ in COLUMNS) + " |"
    lines = [header, rule]
    for row in rows:
        cells = [str(row[key]) for key, _ in COLUMNS]
        cells[[key for key, _ in COLUMNS].index("peak_replicas")] = (
            f"0→{row['peak_replicas']}→{row['final_replicas']}"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
