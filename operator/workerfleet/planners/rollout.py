"""Canary rollouts of a pool's pod template: replica split, analysis verdicts, step progress; pure, no I/O.

Every replica pulls from the same queue, so the canary's share of the jobs is its share of the
replicas. The stable Deployment keeps the old template until the canary is promoted, so rolling
back is scaling the canary to zero: the spec never needs reverting for the fleet to be safe.

`plan_rollout` is the whole state machine. It reads the previous `status.rollout` and returns the
next one, so an operator restarted mid-rollout continues from what status says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from workerfleet.api.workerpool import (
    ANALYSIS_HISTORY_LENGTH,
    Analysis,
    AnalysisResult,
    Canary,
    NoDataPolicy,
    RolloutPhase,
    RolloutStatus,
    Verdict,
)
from workerfleet.planners.status import Event

PERCENT = 100
ROLLOUT_ACTION_ANNOTATION = "workerfleet.dev/rollout-action"
"""Set by `kubectl workerfleet`: `<action>/<revision>/<unique token>`; looked at once
(status.rollout.handledAction), and acted on only while the rollout of that revision can take it."""


class Action(StrEnum):
    """What a person can ask of a running or rolled-back rollout."""

    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    ABORT = "abort"
    RETRY = "retry"


def action_value(action: Action, revision: str, token: str) -> str:
    """The annotation value that asks for `action` on the rollout of `revision`."""
    return f"{action.value}/{revision}/{token}"


def parse_action(value: str) -> tuple[Action, str] | None:
    """(action, revision) of an annotation value; None when it is not `<action>/<revision>/<token>`."""
    parts = value.split("/")
    if len(parts) != len(("action", "revision", "token")) or not all(parts):
        return None
    try:
        return Action(parts[0]), parts[1]
    except ValueError:
        return None


class RolloutReason:
    """Event and condition reasons of rollouts: part of the API, so constants."""

    STARTED = "RolloutStarted"
    STEP_COMPLETED = "StepCompleted"
    ANALYSIS_PASSED = "AnalysisPassed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_ERROR = "AnalysisError"
    PAUSED = "RolloutPaused"
    RESUMED = "RolloutResumed"
    ABORTED = "RolloutAborted"
    PROMOTED = "RolloutPromoted"
    ROLLED_BACK = "RolledBack"
    CANARY_UNHEALTHY = "CanaryUnhealthy"
    SUPERSEDED = "RolloutSuperseded"
    ACTION_IGNORED = "RolloutActionIgnored"


def split_replicas(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for `total` replicas with `weight` percent on the canary.

    Rounding: the canary gets total * weight / 100 rounded half up, then at least one replica when
    weight > 0 (a canary that runs nothing cannot be judged), and the stable revision keeps at least
    one when weight < 100. With a single replica and a weight between 1 and 99 both minimums hold,
    so the pool runs one worker more than its total while the canary runs: handing the only
    worker to an unproven revision would stop the pool when that revision fails.
    """
    if total <= 0 or weight <= 0:
        return max(total, 0), 0
    if weight >= PERCENT:
        return 0, total
    if total == 1:
        return 1, 1
    canary = (total * weight + PERCENT // 2) // PERCENT
    canary = max(canary, 1)
    if total >= 2:
        canary = min(canary, total - 1)
    return total - canary, canary


@dataclass(frozen=True)
class RevisionSample:
    """Attempts one revision finished within the analysis window, and how many of them failed."""

    total: float
    errors: float

    @property
    def error_rate(self) -> float:
        return min(max(self.errors / self.total, 0.0), 1.0) if self.total > 0 else 0.0


@dataclass(frozen=True)
class Measurement:
    """One reading of both revisions over the same window; `error` when Prometheus could not answer."""

    canary: RevisionSample | None
    stable: RevisionSample | None
    error: str | None = None
    canary_restarts: float | None = None
    """Restarts of canary workers within the window; None when the workers export no start time."""


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    message: str
    canary_rate: float | None = None
    stable_rate: float | None = None


def _percent(rate: float) -> str:
    return f"{rate * PERCENT:.1f}%"


def _samples(sample: RevisionSample | None) -> int:
    return round(sample.total) if sample is not None else 0


def judge(measurement: Measurement, analysis: Analysis) -> Judgement:
    """The verdict on one window: never Fail on fewer than minSamples canary jobs.

    The increase over stable is only judged when the stable revision finished minSamples jobs in the
    same window too (at weight 100 it runs none); an analysis that then has no threshold left to
    apply is Inconclusive.
    """
    if measurement.error is not None:
        return Judgement(Verdict.ERROR, f"metrics unavailable: {measurement.error}")
    canary, stable = measurement.canary, measurement.stable
    canary_samples = _samples(canary)
    if canary is None or canary_samples < analysis.min_samples:
        return Judgement(
            Verdict.INCONCLUSIVE,
            f"canary finished {canary_samples} jobs, fewer than minSamples {analysis.min_samples}",
        )
    canary_rate = canary.error_rate
    stable_known = stable is not None and _samples(stable) >= analysis.min_samples
    stable_rate = stable.error_rate if stable is not None and stable_known else None
    numbers = f"canary error rate {_percent(canary_rate)} over {canary_samples} jobs" + (
        f", stable {_percent(stable_rate)} over {_samples(stable)} jobs" if stable_rate is not None else ""
    )
    if analysis.max_error_rate is not None and canary_rate > analysis.max_error_rate:
        return Judgement(
            Verdict.FAILED,
            f"{numbers}: above maxErrorRate {_percent(analysis.max_error_rate)}",
            canary_rate,
            stable_rate,
        )
    if analysis.max_increase_over_stable is not None and stable_rate is not None:
        if canary_rate - stable_rate > analysis.max_increase_over_stable:
            return Judgement(
                Verdict.FAILED,
                f"{numbers}: {_percent(canary_rate - stable_rate)} above stable, more than"
                f" maxIncreaseOverStable {_percent(analysis.max_increase_over_stable)}",
                canary_rate,
                stable_rate,
            )
    elif analysis.max_error_rate is None:
        return Judgement(
            Verdict.INCONCLUSIVE,
            f"{numbers}; stable finished too few jobs to compare with",
            canary_rate,
            stable_rate,
        )
    return Judgement(Verdict.PASSED, f"{numbers}: within thresholds", canary_rate, stable_rate)


def analysis_window_seconds(rollout: RolloutStatus | None, analysis: Analysis, now: datetime) -> int:
    """The query window of an analysis: every job since the step started, and never less than two
    scrapes (a rate over fewer samples is empty) nor one interval."""
    started = rollout.step_started_at if rollout is not None else None
    elapsed = math.ceil((now - started).total_seconds()) if started is not None else 0
    return max(elapsed, 2 * analysis.scrape_interval_seconds, analysis.interval_seconds)


def analysis_due(rollout: RolloutStatus | None, analysis: Analysis | None, now: datetime) -> bool:
    """Whether a running rollout's next analysis window has ended."""
    if analysis is None or rollout is None or rollout.step == 0 or rollout.step_started_at is None:
        return False
    if rollout.phase not in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED) or rollout.paused_at is not None:
        return False
    since = rollout.step_started_at
    if rollout.last_analysis is not None and rollout.last_analysis.time > since:
        since = rollout.last_analysis.time
    return now - since >= timedelta(seconds=analysis.interval_seconds)


def step_pause_over(rollout: RolloutStatus, canary: Canary, now: datetime) -> bool:
    """Whether the current step has held for its pauseSeconds (it may still wait for analysis)."""
    if rollout.step == 0 or rollout.step > len(canary.steps) or rollout.step_started_at is None:
        return False
    pause = canary.steps[rollout.step - 1].pause_seconds
    return pause is not None and now - rollout.step_started_at >= timedelta(seconds=pause)


def analysis_allows_progress(rollout: RolloutStatus, canary: Canary) -> tuple[bool, str]:
    """A step ends only after an analysis of this step that passed (or counts as passing)."""
    analysis = canary.analysis
    if analysis is None:
        return True, ""
    last, started = rollout.last_analysis, rollout.step_started_at
    if last is None or started is None or last.time < started:
        return False, "waiting for the step's first analysis"
    if last.verdict == Verdict.PASSED:
        return True, ""
    no_data = last.verdict in (Verdict.INCONCLUSIVE, Verdict.ERROR)
    if no_data and analysis.on_no_data == NoDataPolicy.CONTINUE:
        return True, ""
    return False, f"waiting for a passing analysis: {last.message}"


def step_may_end(rollout: RolloutStatus, canary: Canary, now: datetime) -> bool:
    """Whether a reconcile now could end the step: its pause is over and no analysis holds it.

    While an analysis holds the step, only the next analysis can release it, so the clock waits for
    that instead of reconciling every tick."""
    return step_pause_over(rollout, canary, now) and analysis_allows_progress(rollout, canary)[0]


@dataclass(frozen=True)
class RolloutInput:
    """What one reconcile knows about a pool's rollout."""

    canary: Canary | None
    """spec.rollout.canary; None rolls every template change out as a plain rolling update."""
    paused: bool
    total_replicas: int
    template_revision: str
    stable_revision: str | None
    """status.stableRevision; None for a new pool."""
    stable_template_known: bool
    """Whether the stable Deployment's template can be rendered again (a canary needs it)."""
    canary_revision: str | None
    rollout: RolloutStatus | None
    canary_ready_replicas: int
    """Ready workers of the canary Deployment on this template revision (0 when there is none)."""
    stable_ready_replicas: int = 0
    """Ready workers of the stable Deployment on this template revision: while promoting, the
    canary's workers go only as these come up."""
    action: str | None = None
    measurement: Measurement | None = None


@dataclass(frozen=True)
class RolloutPlan:
    """Which revisions run with how many replicas, the new status.rollout, and the Events to post."""

    stable_revision: str
    canary_revision: str | None
    """Revision of the canary Deployment; None when there is none (it is deleted)."""
    stable_replicas: int
    canary_replicas: int
    rollout: RolloutStatus
    events: list[Event] = field(default_factory=list)


HEALTHY = RolloutStatus(phase=RolloutPhase.HEALTHY)


def _settled(inp: RolloutInput, revision: str, rollout: RolloutStatus, events: list[Event]) -> RolloutPlan:
    return RolloutPlan(revision, None, inp.total_replicas, 0, rollout, events)


def _step_clock_start(inp: RolloutInput, weight: int, now: datetime) -> datetime | None:
    """When a step at `weight` starts its clock: now if its canary workers are ready, else not yet.

    A canary still pulling its image or starting has done no work, so its pause must not run out
    and its analysis would only find no samples; the clock starts at the next reconcile after the
    canary Deployment reports enough ready workers. A pool at 0 replicas runs no canary, so its
    steps never start (they would run out unseen).
    """
    if inp.total_replicas <= 0:
        return None
    _, wanted = split_replicas(inp.total_replicas, weight)
    return now if inp.canary_ready_replicas >= wanted else None


def _step_clock(inp: RolloutInput, weight: int, now: datetime) -> tuple[datetime | None, datetime | None]:
    """(step_started_at, waiting_since) of a step entered now: started, or waiting for its canary.

    At 0 replicas nothing is waited for, so no progress deadline runs either."""
    started = _step_clock_start(inp, weight, now)
    return started, None if started is not None or inp.total_replicas <= 0 else now


def progress_deadline_passed(rollout: RolloutStatus, canary: Canary, now: datetime) -> bool:
    """Whether a step's canary workers have not been ready for progressDeadlineSeconds: never ready
    since the step began, or no longer ready since its clock started."""
    if rollout.waiting_since is None or rollout.paused_at is not None:
        return False
    return now - rollout.waiting_since >= timedelta(seconds=canary.progress_deadline_seconds)


def _started(inp: RolloutInput, now: datetime, previous: RolloutStatus | None) -> RolloutStatus:
    assert inp.canary is not None
    weight = inp.canary.steps[0].weight
    started, waiting = _step_clock(inp, weight, now)
    return RolloutStatus(
        phase=RolloutPhase.PROGRESSING,
        step=1,
        weight=weight,
        step_started_at=started,
        waiting_since=waiting,
        message=f"step 1 of {len(inp.canary.steps)}: {weight}% of replicas on revision"
        f" {inp.template_revision}",
        handled_action=previous.handled_action if previous is not None else None,
    )


def _ignored(action: str, why: str) -> Event:
    return Event("Warning", RolloutReason.ACTION_IGNORED, f"rollout action {action!r} ignored: {why}")


def _drop_pending_action(inp: RolloutInput, previous: RolloutStatus | None) -> tuple[str | None, list[Event]]:
    """(handledAction, Events) where no canary runs: an action asked for now is dropped, never kept
    for a later canary."""
    handled = previous.handled_action if previous is not None else None
    if inp.action is None or inp.action == handled:
        return handled, []
    return inp.action, [_ignored(inp.action, "no canary is running")]


def _promoting(inp: RolloutInput, rollout: RolloutStatus, events: list[Event]) -> RolloutPlan:
    """The promoted revision's stable workers come up at the full total first; the canary keeps as
    many workers as are not yet replaced by ready stable ones, so the pool never runs short."""
    revision = inp.template_revision
    _, canary_target = split_replicas(inp.total_replicas, rollout.weight)
    remaining = max(0, min(canary_target, inp.total_replicas - inp.stable_ready_replicas))
    if remaining == 0:
        done = RolloutStatus(
            phase=RolloutPhase.HEALTHY,
            handled_action=rollout.handled_action,
            last_analysis=rollout.last_analysis,
            history=rollout.history,
            message=rollout.message,
        )
        return _settled(inp, revision, done, events)
    return RolloutPlan(revision, revision, inp.total_replicas, remaining, rollout, events)


def _held_before_start(inp: RolloutInput, previous: RolloutStatus | None, events: list[Event]) -> RolloutPlan:
    """spec.paused holds a new template before step 1: no canary worker starts."""
    handled, dropped = _drop_pending_action(inp, previous)
    message = f"revision {inp.template_revision} waits for spec.paused to be cleared before step 1"
    already = previous is not None and previous.phase == RolloutPhase.PAUSED and previous.step == 0
    if not already:
        events.append(Event("Normal", RolloutReason.PAUSED, message))
    held = RolloutStatus(phase=RolloutPhase.PAUSED, handled_action=handled, message=message)
    assert inp.stable_revision is not None
    return RolloutPlan(inp.stable_revision, None, inp.total_replicas, 0, held, [*events, *dropped])


def plan_rollout(inp: RolloutInput, now: datetime) -> RolloutPlan:
    """The next state of the pool's rollout and the replica split that goes with it."""
    revision, stable = inp.template_revision, inp.stable_revision
    previous = inp.rollout
    if inp.canary is None or stable is None or not inp.stable_template_known:
        handled, dropped = _drop_pending_action(inp, previous)
        return _settled(
            inp, revision, RolloutStatus(phase=RolloutPhase.HEALTHY, handled_action=handled), dropped
        )
    if revision == stable:
        handled, events = _drop_pending_action(inp, previous)
        if (
            previous is not None
            and previous.phase == RolloutPhase.PROMOTING
            and inp.canary_revision == revision
        ):
            return _promoting(inp, previous.model_copy(update={"handled_action": handled}), events)
        if (
            inp.canary_revision is not None
            and previous is not None
            and previous.phase != RolloutPhase.HEALTHY
        ):
            events.append(
                Event("Normal", RolloutReason.ABORTED, f"template is back at stable revision {stable}")
            )
        settled = RolloutStatus(phase=RolloutPhase.HEALTHY, handled_action=handled)
        return _settled(inp, stable, settled, events)
    events = []
    if inp.canary_revision != revision or previous is None or previous.step == 0:
        if inp.canary_revision is not None and inp.canary_revision != revision:
            events.append(
                Event(
                    "Normal",
                    RolloutReason.SUPERSEDED,
                    f"revision {inp.canary_revision} replaced by {revision} before it was promoted",
                )
            )
        if inp.paused:
            return _held_before_start(inp, previous, events)
        rollout = _started(inp, now, previous)
        events.append(
            Event(
                "Normal",
                RolloutReason.STARTED,
                f"canary of revision {revision} (stable {stable}): " + rollout.message,
            )
        )
    else:
        rollout = previous
    machine = _Machine(inp, rollout, events, now)
    machine.run()
    return machine.plan()


class _Machine:
    """One step of the rollout state machine over a running (or rolled-back) canary."""

    def __init__(self, inp: RolloutInput, rollout: RolloutStatus, events: list[Event], now: datetime) -> None:
        assert inp.canary is not None
        self.inp = inp
        self.canary: Canary = inp.canary
        self.rollout = rollout
        self.events = events
        self.now = now
        self.promoted = False

    def update(self, **changes: object) -> None:
        self.rollout = self.rollout.model_copy(update=changes)

    def emit(self, kind: str, reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, message))

    def run(self) -> None:
        self.act_on_request()
        if self.promoted or self.rollout.phase == RolloutPhase.DEGRADED:
            return
        if self.hold_for_spec_pause() or self.hold_at_zero() or self.wait_for_canary():
            return
        measurement, analysis = self.inp.measurement, self.canary.analysis
        if measurement is not None and analysis is not None and self.record(measurement, analysis):
            return
        if self.hold_while_unready():
            return
        self.advance()

    def act_on_request(self) -> None:
        action = self.inp.action
        if action is None or action == self.rollout.handled_action:
            return
        self.update(handled_action=action)
        parsed = parse_action(action)
        revision = self.inp.template_revision
        if parsed is None:
            choices = ", ".join(member.value for member in Action)
            self.events.append(
                _ignored(action, f"not <action>/<revision>/<token> with an action of {choices}")
            )
            return
        verb, named = parsed
        if named != revision:
            self.events.append(_ignored(action, f"it names revision {named}, the canary runs {revision}"))
            return
        running = self.rollout.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
        if verb == Action.ABORT and running:
            self.roll_back(RolloutReason.ABORTED, "aborted on request")
        elif verb == Action.RETRY and self.rollout.phase == RolloutPhase.DEGRADED:
            self.rollout = _started(self.inp, self.now, self.rollout)
            self.emit(
                "Normal",
                RolloutReason.STARTED,
                f"retry of revision {self.inp.template_revision}: " + self.rollout.message,
            )
        elif verb == Action.PROMOTE_FULL and running:
            self.promote("promoted in full on request")
        elif verb == Action.PROMOTE and running:
            self.complete_step("promoted on request")
        else:
            self.events.append(_ignored(action, f"the rollout of {revision} is {self.rollout.phase.value}"))

    def hold_at_zero(self) -> bool:
        """A pool at 0 replicas runs no canary: its step holds, and times again from the start once
        workers return, so no step ends (and no revision is promoted) unseen."""
        if self.inp.total_replicas > 0:
            return False
        self.update(
            phase=RolloutPhase.PROGRESSING,
            step_started_at=None,
            waiting_since=None,
            message=f"step {self.rollout.step} of {len(self.canary.steps)} at {self.rollout.weight}%:"
            " the pool has 0 replicas, so no canary worker runs; the step starts when workers return",
        )
        return True

    def hold_while_unready(self) -> bool:
        """A started step whose canary workers stop being ready (crash-looping, hung, evicted) holds;
        not ready again within progressDeadlineSeconds, it rolls back as CanaryUnhealthy."""
        _, wanted = split_replicas(self.inp.total_replicas, self.rollout.weight)
        ready = self.inp.canary_ready_replicas
        if ready >= wanted:
            if self.rollout.waiting_since is not None:
                self.update(waiting_since=None)
            return False
        if self.rollout.waiting_since is None:
            self.update(waiting_since=self.now)
        deadline = self.canary.progress_deadline_seconds
        where = f"step {self.rollout.step} of {len(self.canary.steps)} at {self.rollout.weight}%"
        if progress_deadline_passed(self.rollout, self.canary, self.now):
            self.roll_back(
                RolloutReason.CANARY_UNHEALTHY,
                f"{where}: canary unhealthy: {ready} of {wanted} canary workers ready, not ready for"
                f" {deadline}s after the step started (crash-looping, hung or evicted)",
            )
        else:
            self.update(
                phase=RolloutPhase.PROGRESSING,
                message=f"{where}: {ready} of {wanted} canary workers ready; the step holds, and rolls"
                f" back if they are not ready within progressDeadlineSeconds {deadline}",
            )
        return True

    def hold_for_spec_pause(self) -> bool:
        paused_at = self.rollout.paused_at
        if self.inp.paused:
            if paused_at is None:
                self.update(phase=RolloutPhase.PAUSED, paused_at=self.now, message="held by spec.paused")
                self.emit("Normal", RolloutReason.PAUSED, f"step {self.rollout.step} held by spec.paused")
            return True
        if paused_at is not None:
            started, waiting = self.rollout.step_started_at, self.rollout.waiting_since
            self.update(
                phase=RolloutPhase.PROGRESSING,
                paused_at=None,
                step_started_at=None if started is None else started + (self.now - paused_at),
                waiting_since=None if waiting is None else waiting + (self.now - paused_at),
                message=f"step {self.rollout.step} resumed",
            )
            self.emit("Normal", RolloutReason.RESUMED, f"step {self.rollout.step} resumed")
        return False

    def wait_for_canary(self) -> bool:
        """Hold a step whose clock has not started until its canary workers are ready; roll back
        when they are not ready within progressDeadlineSeconds."""
        if self.rollout.step_started_at is not None:
            return False
        started = _step_clock_start(self.inp, self.rollout.weight, self.now)
        if started is not None:
            self.update(step_started_at=started, waiting_since=None)
            return False
        if self.rollout.waiting_since is None:
            self.update(waiting_since=self.now)
        _, wanted = split_replicas(self.inp.total_replicas, self.rollout.weight)
        where = f"step {self.rollout.step} of {len(self.canary.steps)} at {self.rollout.weight}%"
        ready = f"{self.inp.canary_ready_replicas} of {wanted} canary workers ready"
        if progress_deadline_passed(self.rollout, self.canary, self.now):
            self.roll_back(
                RolloutReason.ROLLED_BACK,
                f"{where}: {ready} after progressDeadlineSeconds {self.canary.progress_deadline_seconds}",
            )
        else:
            self.update(
                phase=RolloutPhase.PROGRESSING,
                message=f"{where}: waiting for {wanted} canary workers to be ready"
                f" ({self.inp.canary_ready_replicas} ready)",
            )
        return True

    def record(self, measurement: Measurement, analysis: Analysis) -> bool:
        """Judge one window and record it; True when it rolled the canary back."""
        judgement = judge(measurement, analysis)
        result = AnalysisResult(
            time=self.now,
            verdict=judgement.verdict,
            canary_samples=_samples(measurement.canary),
            stable_samples=_samples(measurement.stable),
            canary_error_rate=judgement.canary_rate,
            stable_error_rate=judgement.stable_rate,
            message=judgement.message[:1000],
        )
        history = [*self.rollout.history, result][-ANALYSIS_HISTORY_LENGTH:]
        self.update(last_analysis=result, history=history)
        verdict = judgement.verdict
        if verdict == Verdict.ERROR:
            # No metrics follows onNoData like too few samples, within consecutiveErrorLimit.
            errors = self.rollout.consecutive_errors + 1
            self.update(consecutive_errors=errors)
            self.emit("Warning", RolloutReason.ANALYSIS_ERROR, f"{judgement.message} ({errors} in a row)")
            if errors > analysis.consecutive_error_limit:
                self.roll_back(
                    RolloutReason.ROLLED_BACK,
                    f"{errors} analyses in a row could not read metrics, more than"
                    f" consecutiveErrorLimit {analysis.consecutive_error_limit}: {judgement.message}",
                )
                return True
            return analysis.on_no_data == NoDataPolicy.FAIL and self.count_failure(judgement, analysis)
        self.update(consecutive_errors=0)
        if self.judge_restarts(measurement, analysis) or self.judge_silence(measurement, analysis, judgement):
            return True
        failing = verdict == Verdict.FAILED or (
            verdict == Verdict.INCONCLUSIVE and analysis.on_no_data == NoDataPolicy.FAIL
        )
        if verdict == Verdict.PASSED:
            self.emit("Normal", RolloutReason.ANALYSIS_PASSED, judgement.message)
        elif verdict == Verdict.INCONCLUSIVE:
            self.emit("Normal", RolloutReason.ANALYSIS_INCONCLUSIVE, judgement.message)
        else:
            self.emit("Warning", RolloutReason.ANALYSIS_FAILED, judgement.message)
        return failing and self.count_failure(judgement, analysis)

    def count_failure(self, judgement: Judgement, analysis: Analysis) -> bool:
        """Count one failing verdict; True when it is one more than failureLimit (rolled back)."""
        failures = self.rollout.failed_analyses + 1
        self.update(failed_analyses=failures)
        if failures <= analysis.failure_limit:
            return False
        self.roll_back(
            RolloutReason.ROLLED_BACK,
            f"{judgement.message} ({failures} failing analyses, failureLimit {analysis.failure_limit})",
        )
        return True

    def judge_restarts(self, measurement: Measurement, analysis: Analysis) -> bool:
        """Roll back a canary whose workers restarted restartLimit times within the window; True when
        it rolled back."""
        restarts = measurement.canary_restarts
        if restarts is None or restarts < analysis.restart_limit:
            return False
        self.roll_back(
            RolloutReason.CANARY_UNHEALTHY,
            f"canary unhealthy: its workers restarted {round(restarts)} times within the analysis window"
            f" (restartLimit {analysis.restart_limit}); they crash-loop or are killed (out of memory?)",
        )
        return True

    def judge_silence(self, measurement: Measurement, analysis: Analysis, judgement: Judgement) -> bool:
        """Count analyses in which the canary did nothing while stable worked; roll back at
        noSamplesLimit. True when it rolled back."""
        stable_jobs = _samples(measurement.stable)
        if _samples(measurement.canary) > 0 or stable_jobs < analysis.min_samples:
            self.update(silent_analyses=0)
            return False
        silent = self.rollout.silent_analyses + 1
        self.update(silent_analyses=silent)
        if silent < analysis.no_samples_limit:
            return False
        self.emit("Normal", RolloutReason.ANALYSIS_INCONCLUSIVE, judgement.message)
        self.roll_back(
            RolloutReason.CANARY_UNHEALTHY,
            f"canary unhealthy: it finished no job in {silent} analyses in a row while stable finished"
            f" {stable_jobs} (noSamplesLimit {analysis.no_samples_limit}); its workers crash, hang or"
            " cannot reach the queue",
        )
        return True

    def advance(self) -> None:
        step = self.canary.steps[self.rollout.step - 1]
        started = self.rollout.step_started_at or self.now
        count = len(self.canary.steps)
        where = f"step {self.rollout.step} of {count} at {self.rollout.weight}%"
        if step.pause_seconds is None:
            self.update(phase=RolloutPhase.PAUSED, message=f"{where}: waiting for promote")
            return
        allowed, why = analysis_allows_progress(self.rollout, self.canary)
        elapsed = self.now - started >= timedelta(seconds=step.pause_seconds)
        if elapsed and allowed:
            self.complete_step(f"held {step.pause_seconds}s")
            return
        last = self.rollout.last_analysis
        held_by_no_data = (
            not allowed
            and last is not None
            and last.verdict in (Verdict.INCONCLUSIVE, Verdict.ERROR)
            and self.canary.analysis is not None
            and self.canary.analysis.on_no_data == NoDataPolicy.PAUSE
        )
        if held_by_no_data:
            self.update(phase=RolloutPhase.PAUSED, message=f"{where}: {why}")
        elif not elapsed:
            self.update(phase=RolloutPhase.PROGRESSING, message=f"{where}: holding for {step.pause_seconds}s")
        else:
            self.update(phase=RolloutPhase.PROGRESSING, message=f"{where}: {why}")

    def complete_step(self, why: str) -> None:
        number = self.rollout.step
        self.emit(
            "Normal", RolloutReason.STEP_COMPLETED, f"step {number} at {self.rollout.weight}% done: {why}"
        )
        if number >= len(self.canary.steps):
            self.promote(f"all {number} steps done")
            return
        weight = self.canary.steps[number].weight
        started, waiting = _step_clock(self.inp, weight, self.now)
        self.update(
            phase=RolloutPhase.PROGRESSING,
            step=number + 1,
            weight=weight,
            step_started_at=started,
            waiting_since=waiting,
            message=f"step {number + 1} of {len(self.canary.steps)}: {weight}% of replicas on revision"
            f" {self.inp.template_revision}",
        )

    def promote(self, why: str) -> None:
        """The template becomes stable at the full total; the canary goes as those workers get ready."""
        self.promoted = True
        self.emit(
            "Normal",
            RolloutReason.PROMOTED,
            f"revision {self.inp.template_revision} is stable ({why});"
            f" it replaces {self.inp.stable_revision}",
        )
        self.rollout = RolloutStatus(
            phase=RolloutPhase.PROMOTING,
            weight=self.rollout.weight,
            handled_action=self.rollout.handled_action,
            last_analysis=self.rollout.last_analysis,
            history=self.rollout.history,
            message=f"revision {self.inp.template_revision} promoted: {why}; the canary's workers go as"
            f" {self.inp.total_replicas} stable workers of it get ready",
        )

    def roll_back(self, reason: str, why: str) -> None:
        stable_replicas = self.inp.total_replicas
        self.update(phase=RolloutPhase.DEGRADED, weight=0, paused_at=None, message=why)
        self.emit(
            "Warning",
            reason,
            f"{why}; canary {self.inp.template_revision} scaled to 0, stable {self.inp.stable_revision} back"
            f" to {stable_replicas} replicas",
        )

    def plan(self) -> RolloutPlan:
        stable = self.inp.stable_revision
        assert stable is not None
        if self.promoted:
            return _promoting(self.inp, self.rollout, self.events)
        total = self.inp.total_replicas
        stable_target, canary_replicas = split_replicas(total, self.rollout.weight)
        # Stable gives up only the workers that ready canary workers already replace.
        replaced = min(self.inp.canary_ready_replicas, canary_replicas)
        stable_replicas = min(max(total, 0), max(stable_target, total - replaced))
        return RolloutPlan(
            stable_revision=stable,
            canary_revision=self.inp.template_revision,
            stable_replicas=stable_replicas,
            canary_replicas=canary_replicas,
            rollout=self.rollout,
            events=self.events,
        )
