"""Canary rollouts: the replica split, analysis verdicts and the step state machine, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workerfleet.api.workerpool import Analysis, AnalysisResult, Canary, RolloutPhase, RolloutStatus, Verdict
from workerfleet.planners.rollout import (
    Measurement,
    RevisionSample,
    RolloutInput,
    RolloutPlan,
    RolloutReason,
    analysis_due,
    analysis_window_seconds,
    judge,
    plan_rollout,
    progress_deadline_passed,
    split_replicas,
    step_may_end,
    step_pause_over,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TOTALS = (0, 1, 2, 3, 10, 100)


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [
        *[(0, weight, (0, 0)) for weight in (0, 1, 50, 100)],
        (1, 0, (1, 0)),
        # one replica: one more worker while both revisions run, so stable never drops to 0 early
        (1, 1, (1, 1)),
        (1, 50, (1, 1)),
        (1, 99, (1, 1)),
        (1, 100, (0, 1)),
        (2, 0, (2, 0)),
        (2, 1, (1, 1)),
        (2, 50, (1, 1)),
        (2, 75, (1, 1)),
        (2, 99, (1, 1)),
        (2, 100, (0, 2)),
        (3, 1, (2, 1)),
        (3, 10, (2, 1)),
        (3, 33, (2, 1)),
        (3, 50, (1, 2)),
        (3, 90, (1, 2)),
        (3, 100, (0, 3)),
        (10, 1, (9, 1)),
        (10, 10, (9, 1)),
        (10, 25, (7, 3)),
        (10, 50, (5, 5)),
        (10, 95, (1, 9)),
        (10, 100, (0, 10)),
        (100, 1, (99, 1)),
        (100, 10, (90, 10)),
        (100, 33, (67, 33)),
        (100, 50, (50, 50)),
        (100, 99, (1, 99)),
        (100, 100, (0, 100)),
    ],
)
def test_split_table(total: int, weight: int, expected: tuple[int, int]) -> None:
    assert split_replicas(total, weight) == expected


@pytest.mark.parametrize("total", TOTALS)
def test_split_rules_hold_for_every_weight(total: int) -> None:
    previous_canary = 0
    for weight in range(101):
        stable, canary = split_replicas(total, weight)
        surge = 1 if total == 1 and 0 < weight < 100 else 0
        assert stable + canary == total + surge
        assert stable >= 0
        assert canary >= previous_canary, "more weight never means fewer canary replicas"
        if weight > 0 and total > 0:
            assert canary >= 1
        if weight == 0:
            assert canary == 0
        if weight < 100 and total >= 1:
            assert stable >= 1
        if weight == 100:
            assert stable == 0
        previous_canary = canary


def analysis(**overrides: Any) -> Analysis:
    settings: dict[str, Any] = {
        "intervalSeconds": 10,
        "maxErrorRate": 0.1,
        "maxIncreaseOverStable": 0.05,
        "minSamples": 100,
        "prometheus": {"address": "http://127.0.0.1:9090"},
    }
    settings.update(overrides)
    return Analysis.model_validate(settings)


def sample(total: float, errors: float) -> RevisionSample:
    return RevisionSample(total=total, errors=errors)


@pytest.mark.parametrize(
    ("measurement", "settings", "verdict"),
    [
        (Measurement(None, None, error="connection refused"), {}, Verdict.ERROR),
        (Measurement(None, sample(500, 0)), {}, Verdict.INCONCLUSIVE),
        (Measurement(sample(99, 99), sample(500, 0)), {}, Verdict.INCONCLUSIVE),
        (Measurement(sample(100, 0), sample(500, 0)), {}, Verdict.PASSED),
        (Measurement(sample(100, 10), None), {}, Verdict.PASSED),
        (Measurement(sample(100, 11), None), {}, Verdict.FAILED),
        (Measurement(sample(200, 60), sample(800, 0)), {}, Verdict.FAILED),
        # noisy but fine: 8% against a stable at 5% is within an increase of 5 points
        (Measurement(sample(200, 16), sample(800, 40)), {"maxErrorRate": None}, Verdict.PASSED),
        (Measurement(sample(200, 24), sample(800, 40)), {"maxErrorRate": None}, Verdict.FAILED),
        # the increase is judged only on a stable with minSamples jobs too
        (Measurement(sample(200, 24), sample(50, 0)), {"maxErrorRate": None}, Verdict.INCONCLUSIVE),
        (Measurement(sample(200, 24), sample(50, 0)), {"maxErrorRate": 0.2}, Verdict.PASSED),
        (Measurement(sample(1000, 0), sample(0, 0)), {"maxErrorRate": 0.0}, Verdict.PASSED),
        (Measurement(sample(1000, 1), sample(0, 0)), {"maxErrorRate": 0.0}, Verdict.FAILED),
    ],
)
def test_verdicts(measurement: Measurement, settings: dict[str, Any], verdict: Verdict) -> None:
    assert judge(measurement, analysis(**settings)).verdict == verdict


def test_a_failing_verdict_names_the_numbers_and_the_threshold() -> None:
    judgement = judge(Measurement(sample(200, 60), sample(800, 0)), analysis())
    assert judgement.canary_rate == pytest.approx(0.3)
    assert judgement.stable_rate == 0.0
    assert "30.0%" in judgement.message
    assert "200 jobs" in judgement.message
    assert "maxErrorRate 10.0%" in judgement.message


def canary(steps: list[dict[str, Any]] | None = None, **analysis_settings: Any) -> Canary:
    return Canary.model_validate(
        {
            "steps": steps or [{"weight": 10, "pauseSeconds": 30}, {"weight": 50, "pauseSeconds": 30}],
            "analysis": analysis(**analysis_settings).to_dict(),
        }
    )


def running(step: int = 1, weight: int = 10, **changes: Any) -> RolloutStatus:
    return RolloutStatus(
        phase=RolloutPhase.PROGRESSING, step=step, weight=weight, step_started_at=T0
    ).model_copy(update=changes)


def given(rollout: RolloutStatus | None, **changes: Any) -> RolloutInput:
    settings: dict[str, Any] = {
        "canary": canary(),
        "paused": False,
        "total_replicas": 10,
        "template_revision": "new",
        "stable_revision": "old",
        "stable_template_known": True,
        "canary_revision": "new" if rollout is not None else None,
        "rollout": rollout,
        "canary_ready_replicas": 10,
    }
    settings.update(changes)
    return RolloutInput(**settings)


def reasons(plan: RolloutPlan) -> list[str]:
    return [event.reason for event in plan.events]


def test_a_new_template_starts_a_canary_at_the_first_weight() -> None:
    plan = plan_rollout(given(None), T0)
    assert (plan.stable_revision, plan.canary_revision) == ("old", "new")
    assert (plan.stable_replicas, plan.canary_replicas) == (9, 1)
    assert (plan.rollout.phase, plan.rollout.step, plan.rollout.step_started_at) == (
        RolloutPhase.PROGRESSING,
        1,
        T0,
    )
    assert reasons(plan) == [RolloutReason.STARTED]


@pytest.mark.parametrize(
    "changes",
    [{"canary": None}, {"stable_revision": None}, {"stable_template_known": False}],
    ids=["no rollout set", "new pool", "stable template unknown"],
)
def test_without_a_canary_the_template_goes_straight_to_stable(changes: dict[str, Any]) -> None:
    plan = plan_rollout(given(None, **changes), T0)
    assert (plan.stable_revision, plan.canary_revision, plan.stable_replicas) == ("new", None, 10)
    assert plan.rollout.phase == RolloutPhase.HEALTHY


def test_a_steady_pool_stays_healthy_without_events() -> None:
    plan = plan_rollout(given(RolloutStatus(phase=RolloutPhase.HEALTHY), template_revision="old"), T0)
    assert (plan.stable_revision, plan.canary_revision, plan.events) == ("old", None, [])


def test_a_step_waits_for_its_pause_and_its_analysis() -> None:
    holding = plan_rollout(given(running()), T0 + timedelta(seconds=29))
    assert (holding.rollout.step, holding.events) == (1, [])
    no_analysis_yet = plan_rollout(given(running()), T0 + timedelta(seconds=31))
    assert no_analysis_yet.rollout.step == 1
    assert "first analysis" in no_analysis_yet.rollout.message


def test_a_passing_analysis_after_the_pause_moves_to_the_next_step() -> None:
    now = T0 + timedelta(seconds=30)
    plan = plan_rollout(given(running(), measurement=Measurement(sample(150, 0), sample(900, 0))), now)
    assert (plan.rollout.step, plan.rollout.weight, plan.rollout.step_started_at) == (2, 50, now)
    assert (plan.stable_replicas, plan.canary_replicas) == (5, 5)
    assert reasons(plan) == [RolloutReason.ANALYSIS_PASSED, RolloutReason.STEP_COMPLETED]
    assert plan.rollout.last_analysis is not None
    assert plan.rollout.last_analysis.canary_samples == 150


def test_the_last_step_promotes_the_canary_to_stable() -> None:
    now = T0 + timedelta(seconds=30)
    plan = plan_rollout(
        given(running(step=2, weight=50), measurement=Measurement(sample(500, 0), sample(500, 0))), now
    )
    assert (plan.stable_revision, plan.canary_revision) == ("new", "new")
    assert (plan.stable_replicas, plan.canary_replicas) == (10, 5)
    assert plan.rollout.phase == RolloutPhase.PROMOTING
    assert reasons(plan)[-2:] == [RolloutReason.STEP_COMPLETED, RolloutReason.PROMOTED]


def test_a_failing_analysis_rolls_back_at_once() -> None:
    plan = plan_rollout(
        given(running(), measurement=Measurement(sample(200, 60), sample(900, 0))), T0 + timedelta(seconds=10)
    )
    assert plan.rollout.phase == RolloutPhase.DEGRADED
    assert (plan.stable_revision, plan.canary_revision) == ("old", "new")
    assert (plan.stable_replicas, plan.canary_replicas) == (10, 0)
    assert reasons(plan) == [RolloutReason.ANALYSIS_FAILED, RolloutReason.ROLLED_BACK]
    rolled_back = plan.events[-1]
    assert rolled_back.type == "Warning"
    assert "30.0%" in rolled_back.message
    assert "maxErrorRate 10.0%" in rolled_back.message


def test_failures_within_the_failure_limit_only_count() -> None:
    inp = given(
        running(),
        canary=canary(failureLimit=1),
        measurement=Measurement(sample(200, 60), sample(900, 0)),
    )
    first = plan_rollout(inp, T0 + timedelta(seconds=10))
    assert (first.rollout.phase, first.rollout.failed_analyses) == (RolloutPhase.PROGRESSING, 1)
    second = plan_rollout(
        given(
            first.rollout,
            canary=canary(failureLimit=1),
            measurement=Measurement(sample(200, 60), sample(900, 0)),
        ),
        T0 + timedelta(seconds=20),
    )
    assert second.rollout.phase == RolloutPhase.DEGRADED


def test_too_few_samples_never_roll_back_and_pause_the_step() -> None:
    rollout = running()
    for tick in range(1, 20):
        plan = plan_rollout(
            given(rollout, measurement=Measurement(sample(20, 20), sample(900, 0))),
            T0 + timedelta(seconds=10 * tick),
        )
        rollout = plan.rollout
        assert plan.canary_replicas == 1
    assert (rollout.phase, rollout.step, rollout.failed_analyses) == (RolloutPhase.PAUSED, 1, 0)
    assert "minSamples" in rollout.message
    assert len(rollout.history) == 10


@pytest.mark.parametrize(
    ("policy", "phase", "step"),
    [
        ("Pause", RolloutPhase.PAUSED, 1),
        ("Continue", RolloutPhase.PROGRESSING, 2),
        ("Fail", RolloutPhase.DEGRADED, 1),
    ],
)
def test_on_no_data(policy: str, phase: RolloutPhase, step: int) -> None:
    plan = plan_rollout(
        given(running(), canary=canary(onNoData=policy), measurement=Measurement(None, None)),
        T0 + timedelta(seconds=30),
    )
    assert (plan.rollout.phase, plan.rollout.step) == (phase, step)


def test_prometheus_unreachable_rolls_back_after_the_consecutive_error_limit() -> None:
    rollout = running()
    for tick in range(1, 4):
        plan = plan_rollout(
            given(
                rollout,
                canary=canary(consecutiveErrorLimit=2),
                measurement=Measurement(None, None, "refused"),
            ),
            T0 + timedelta(seconds=10 * tick),
        )
        rollout = plan.rollout
    assert rollout.phase == RolloutPhase.DEGRADED
    assert RolloutReason.ROLLED_BACK in reasons(plan)


def test_a_step_without_pause_waits_for_promote() -> None:
    steps = [{"weight": 20}, {"weight": 60, "pauseSeconds": 5}]
    waiting = plan_rollout(given(running(weight=20), canary=canary(steps)), T0 + timedelta(hours=1))
    assert (waiting.rollout.phase, waiting.rollout.step) == (RolloutPhase.PAUSED, 1)
    assert "promote" in waiting.rollout.message
    promoted = plan_rollout(
        given(running(weight=20), canary=canary(steps), action="promote/new/1"), T0 + timedelta(hours=1)
    )
    assert (promoted.rollout.step, promoted.rollout.weight, promoted.rollout.handled_action) == (
        2,
        60,
        "promote/new/1",
    )
    again = plan_rollout(
        given(promoted.rollout, canary=canary(steps), action="promote/new/1"), T0 + timedelta(hours=1)
    )
    assert again.rollout.step == 2, "an action is acted on once"


def test_promote_full_abort_and_retry() -> None:
    full = plan_rollout(given(running(), action="promote-full/new/a"), T0)
    assert (full.stable_revision, full.canary_revision, full.rollout.phase) == (
        "new",
        "new",
        RolloutPhase.PROMOTING,
    )
    aborted = plan_rollout(given(running(), action="abort/new/b"), T0)
    assert (aborted.rollout.phase, aborted.canary_replicas, aborted.stable_replicas) == (
        RolloutPhase.DEGRADED,
        0,
        10,
    )
    assert reasons(aborted) == [RolloutReason.ABORTED]
    stays = plan_rollout(given(aborted.rollout), T0 + timedelta(minutes=5))
    assert (stays.rollout.phase, stays.events) == (RolloutPhase.DEGRADED, [])
    retried = plan_rollout(given(aborted.rollout, action="retry/new/c"), T0 + timedelta(minutes=5))
    assert (retried.rollout.phase, retried.rollout.step, retried.canary_replicas) == (
        RolloutPhase.PROGRESSING,
        1,
        1,
    )
    assert reasons(retried) == [RolloutReason.STARTED]


def test_a_newer_template_supersedes_a_rolled_back_one() -> None:
    degraded = running().model_copy(update={"phase": RolloutPhase.DEGRADED, "weight": 0})
    plan = plan_rollout(given(degraded, template_revision="newer"), T0)
    assert (plan.canary_revision, plan.rollout.phase, plan.rollout.step) == (
        "newer",
        RolloutPhase.PROGRESSING,
        1,
    )
    assert reasons(plan) == [RolloutReason.SUPERSEDED, RolloutReason.STARTED]


def test_going_back_to_the_stable_template_ends_the_rollout() -> None:
    plan = plan_rollout(given(running(), template_revision="old"), T0)
    assert (plan.canary_revision, plan.stable_replicas, plan.rollout.phase) == (
        None,
        10,
        RolloutPhase.HEALTHY,
    )
    assert reasons(plan) == [RolloutReason.ABORTED]


def test_spec_paused_freezes_the_step_clock() -> None:
    paused = plan_rollout(given(running(), paused=True), T0 + timedelta(seconds=20))
    assert (paused.rollout.phase, paused.rollout.paused_at) == (
        RolloutPhase.PAUSED,
        T0 + timedelta(seconds=20),
    )
    assert reasons(paused) == [RolloutReason.PAUSED]
    assert not analysis_due(paused.rollout, canary().analysis, T0 + timedelta(hours=1))
    resumed = plan_rollout(given(paused.rollout), T0 + timedelta(seconds=320))
    assert resumed.rollout.step_started_at == T0 + timedelta(seconds=300)
    assert reasons(resumed) == [RolloutReason.RESUMED]
    assert not step_pause_over(resumed.rollout, canary(), T0 + timedelta(seconds=320))


def test_analysis_due_after_each_interval_of_the_step() -> None:
    settings = canary().analysis
    assert not analysis_due(running(), settings, T0 + timedelta(seconds=9))
    assert analysis_due(running(), settings, T0 + timedelta(seconds=10))
    after_one = plan_rollout(
        given(running(), measurement=Measurement(sample(10, 0), None)), T0 + timedelta(seconds=10)
    ).rollout
    assert not analysis_due(after_one, settings, T0 + timedelta(seconds=19))
    assert analysis_due(after_one, settings, T0 + timedelta(seconds=20))
    assert not analysis_due(None, settings, T0)
    assert not analysis_due(running(), None, T0 + timedelta(hours=1))


def test_the_total_is_split_by_the_current_weight_whatever_it_is() -> None:
    for total in TOTALS:
        plan = plan_rollout(
            given(running(step=2, weight=50), total_replicas=total, canary_ready_replicas=total), T0
        )
        assert (plan.stable_replicas, plan.canary_replicas) == split_replicas(total, 50)


def test_a_new_canary_starts_its_step_clock_only_when_its_workers_are_ready() -> None:
    # Given a new template and no ready canary worker yet
    starting = plan_rollout(given(None, canary_ready_replicas=0), T0)
    # Then the canary Deployment is asked for, stable keeps all ten, and the step's clock has not started
    assert (starting.stable_replicas, starting.canary_replicas) == (10, 1)
    assert (starting.rollout.phase, starting.rollout.step, starting.rollout.step_started_at) == (
        RolloutPhase.PROGRESSING,
        1,
        None,
    )
    assert "waiting for 1 canary workers to be ready (0 ready)" in starting.rollout.message
    assert reasons(starting) == [RolloutReason.STARTED]
    assert starting.rollout.waiting_since == T0
    assert not analysis_due(starting.rollout, canary().analysis, T0 + timedelta(hours=1))
    assert not step_pause_over(starting.rollout, canary(), T0 + timedelta(hours=1))

    # When nine minutes pass with the canary still not ready, the step neither ends nor is judged
    later = T0 + timedelta(minutes=9)
    still = plan_rollout(given(starting.rollout, canary_ready_replicas=0), later)
    assert (still.rollout.step, still.rollout.step_started_at, still.events) == (1, None, [])

    # When the canary worker is ready, the clock starts at that reconcile
    ready = plan_rollout(given(starting.rollout, canary_ready_replicas=1), later)
    assert (ready.rollout.step, ready.rollout.step_started_at, ready.events) == (1, later, [])
    assert ready.rollout.waiting_since is None
    assert not step_pause_over(ready.rollout, canary(), later + timedelta(seconds=29))
    assert step_pause_over(ready.rollout, canary(), later + timedelta(seconds=30))


@pytest.mark.parametrize(
    ("total", "weight", "ready", "started"),
    [
        (10, 10, 0, False),
        (10, 10, 1, True),
        (10, 50, 4, False),
        (10, 50, 5, True),
        (10, 50, 9, True),
        (3, 10, 0, False),
        (3, 10, 1, True),
        (0, 10, 0, False),
        (1, 100, 0, False),
        (1, 100, 1, True),
    ],
)
def test_the_step_clock_waits_for_the_steps_share_of_ready_canary_workers(
    total: int, weight: int, ready: int, started: bool
) -> None:
    waiting = running(weight=weight, step_started_at=None, waiting_since=T0)
    plan = plan_rollout(given(waiting, total_replicas=total, canary_ready_replicas=ready), T0)
    assert (plan.rollout.step_started_at == T0) is started
    assert plan.canary_replicas == split_replicas(total, weight)[1]


def test_the_next_step_waits_for_its_larger_canary() -> None:
    # Given step 1 (10%) passed its pause and analysis, with its one canary worker ready
    now = T0 + timedelta(seconds=30)
    measured = Measurement(sample(150, 0), sample(900, 0))
    plan = plan_rollout(given(running(), measurement=measured, canary_ready_replicas=1), now)
    # Then step 2 asks for 5 canary workers and its clock waits for them
    assert (plan.rollout.step, plan.rollout.weight, plan.rollout.step_started_at) == (2, 50, None)
    assert plan.canary_replicas == 5
    assert reasons(plan) == [RolloutReason.ANALYSIS_PASSED, RolloutReason.STEP_COMPLETED]
    waiting = plan_rollout(given(plan.rollout, canary_ready_replicas=3), now + timedelta(seconds=5))
    assert waiting.rollout.step_started_at is None
    assert "waiting for 5 canary workers to be ready (3 ready)" in waiting.rollout.message


def test_resuming_from_spec_paused_keeps_a_waiting_step_waiting() -> None:
    waiting = running(step_started_at=None, waiting_since=T0)
    paused = plan_rollout(given(waiting, paused=True, canary_ready_replicas=0), T0 + timedelta(seconds=10))
    resumed = plan_rollout(given(paused.rollout, canary_ready_replicas=0), T0 + timedelta(seconds=70))
    assert (resumed.rollout.phase, resumed.rollout.paused_at, resumed.rollout.step_started_at) == (
        RolloutPhase.PROGRESSING,
        None,
        None,
    )
    # The paused minute does not count towards the progress deadline
    assert resumed.rollout.waiting_since == T0 + timedelta(seconds=60)
    assert reasons(resumed) == [RolloutReason.RESUMED]


def test_a_canary_not_ready_within_the_progress_deadline_is_rolled_back() -> None:
    # Given step 2 (50%) has waited for its 5 canary workers since T0, and 2 are ready
    waiting = running(step=2, weight=50, step_started_at=None, waiting_since=T0)
    deadline = T0 + timedelta(seconds=600)
    # Then one second before the deadline it still waits
    before = plan_rollout(given(waiting, canary_ready_replicas=2), deadline - timedelta(seconds=1))
    assert (before.rollout.phase, before.events) == (RolloutPhase.PROGRESSING, [])
    assert not progress_deadline_passed(waiting, canary(), deadline - timedelta(seconds=1))
    # And at the deadline the canary goes to zero with a Warning that says why
    assert progress_deadline_passed(waiting, canary(), deadline)
    plan = plan_rollout(given(waiting, canary_ready_replicas=2), deadline)
    assert plan.rollout.phase == RolloutPhase.DEGRADED
    assert (plan.stable_replicas, plan.canary_replicas) == (10, 0)
    assert reasons(plan) == [RolloutReason.ROLLED_BACK]
    assert plan.events[0].type == "Warning"
    assert "2 of 5 canary workers ready after progressDeadlineSeconds 600" in plan.events[0].message


def test_the_progress_deadline_follows_the_canary_setting() -> None:
    short = Canary.model_validate({**canary().to_dict(), "progressDeadlineSeconds": 30})
    waiting = running(step_started_at=None, waiting_since=T0)
    assert not progress_deadline_passed(waiting, short, T0 + timedelta(seconds=29))
    assert progress_deadline_passed(waiting, short, T0 + timedelta(seconds=30))
    assert not progress_deadline_passed(running(), short, T0 + timedelta(hours=1))
    assert not progress_deadline_passed(
        waiting.model_copy(update={"paused_at": T0}), short, T0 + timedelta(hours=1)
    )


def test_a_waiting_step_without_a_recorded_start_starts_its_deadline_now() -> None:
    # A status written before waitingSince existed: the deadline counts from this reconcile
    unrecorded = running(step_started_at=None)
    plan = plan_rollout(given(unrecorded, canary_ready_replicas=0), T0 + timedelta(hours=2))
    assert (plan.rollout.phase, plan.rollout.waiting_since, plan.events) == (
        RolloutPhase.PROGRESSING,
        T0 + timedelta(hours=2),
        [],
    )


# --- Actions name the revision they are for ----------------------------------------------------


def test_a_promote_full_sent_while_no_canary_runs_does_not_skip_the_next_canary() -> None:
    # Given a healthy pool and a `promote --full` sent while nothing rolls out
    healthy = RolloutStatus(phase=RolloutPhase.HEALTHY)
    idle = plan_rollout(given(healthy, template_revision="old", action="promote-full/old/t1"), T0)
    # Then it is dropped with a Warning that says why
    assert reasons(idle) == [RolloutReason.ACTION_IGNORED]
    assert idle.events[0].type == "Warning"
    assert "no canary" in idle.events[0].message
    # When a new template arrives with the annotation still on the pool
    started = plan_rollout(given(idle.rollout, canary_revision=None, action="promote-full/old/t1"), T0)
    # Then the new canary starts at step 1 and is not promoted
    assert (started.canary_revision, started.rollout.phase, started.rollout.step) == (
        "new",
        RolloutPhase.PROGRESSING,
        1,
    )
    assert RolloutReason.PROMOTED not in reasons(started)


def test_an_action_for_another_revision_is_dropped_with_an_event() -> None:
    plan = plan_rollout(given(running(), action="promote-full/older/t2"), T0)
    assert (plan.canary_revision, plan.rollout.phase, plan.rollout.handled_action) == (
        "new",
        RolloutPhase.PROGRESSING,
        "promote-full/older/t2",
    )
    assert reasons(plan) == [RolloutReason.ACTION_IGNORED]
    assert "older" in plan.events[0].message


@pytest.mark.parametrize(
    ("rollout", "action"),
    [
        (running(), "retry/new/t"),
        (running(phase=RolloutPhase.DEGRADED, weight=0), "promote/new/t"),
        (running(phase=RolloutPhase.DEGRADED, weight=0), "abort/new/t"),
        (running(), "promote-full/t"),
        (running(), "dance/new/t"),
    ],
    ids=["retry while running", "promote rolled back", "abort rolled back", "no revision", "unknown"],
)
def test_an_action_that_does_not_fit_is_dropped_with_an_event(rollout: RolloutStatus, action: str) -> None:
    plan = plan_rollout(given(rollout, action=action), T0)
    assert plan.rollout.phase == rollout.phase
    assert plan.rollout.step == rollout.step
    assert plan.rollout.handled_action == action
    assert RolloutReason.ACTION_IGNORED in reasons(plan)


# --- Replica split edge cases ------------------------------------------------------------------


def test_at_total_zero_the_steps_hold_and_nothing_is_promoted_unseen() -> None:
    # Given a pool scaled to zero and a new template with steps that have no analysis
    plain = Canary.model_validate(
        {"steps": [{"weight": 10, "pauseSeconds": 5}, {"weight": 50, "pauseSeconds": 5}]}
    )
    plan = plan_rollout(given(None, canary=plain, total_replicas=0, canary_ready_replicas=0), T0)
    # When an hour passes
    for minute in range(1, 61):
        plan = plan_rollout(
            given(plan.rollout, canary=plain, total_replicas=0, canary_ready_replicas=0),
            T0 + timedelta(minutes=minute),
        )
    # Then the rollout still holds at step 1, not promoted, not rolled back
    assert (plan.rollout.phase, plan.rollout.step, plan.stable_revision) == (
        RolloutPhase.PROGRESSING,
        1,
        "old",
    )
    assert plan.rollout.step_started_at is None
    assert "0 replicas" in plan.rollout.message
    assert not progress_deadline_passed(plan.rollout, plain, T0 + timedelta(hours=1))
    # And when workers come back, step 1 times from when its canary is ready
    back = plan_rollout(
        given(plan.rollout, canary=plain, total_replicas=3, canary_ready_replicas=1), T0 + timedelta(hours=2)
    )
    assert (back.rollout.step, back.rollout.step_started_at) == (1, T0 + timedelta(hours=2))


def test_a_step_whose_pool_scales_to_zero_times_again_when_workers_return() -> None:
    plan = plan_rollout(
        given(running(), total_replicas=0, canary_ready_replicas=0), T0 + timedelta(seconds=31)
    )
    assert (plan.rollout.step, plan.rollout.step_started_at, plan.rollout.phase) == (
        1,
        None,
        RolloutPhase.PROGRESSING,
    )
    assert plan.events == []


@pytest.mark.parametrize(
    ("total", "weight", "ready", "stable", "canary"),
    [
        # one replica: the stable worker stays while both revisions exist
        (1, 10, 0, 1, 1),
        (1, 10, 1, 1, 1),
        (1, 100, 0, 1, 1),
        (1, 100, 1, 0, 1),
        # stable shrinks only by the canary workers that are ready
        (10, 50, 0, 10, 5),
        (10, 50, 2, 8, 5),
        (10, 50, 5, 5, 5),
        (10, 100, 4, 6, 10),
        (10, 100, 10, 0, 10),
        (3, 10, 0, 3, 1),
        (3, 10, 1, 2, 1),
    ],
)
def test_stable_is_reduced_only_by_ready_canary_workers(
    total: int, weight: int, ready: int, stable: int, canary: int
) -> None:
    waiting = running(weight=weight, step_started_at=None, waiting_since=T0)
    plan = plan_rollout(given(waiting, total_replicas=total, canary_ready_replicas=ready), T0)
    assert (plan.stable_replicas, plan.canary_replicas) == (stable, canary)


def test_promotion_scales_stable_up_before_the_canary_goes() -> None:
    # Given the last step at 100%: all ten workers run the canary, stable has none
    steps = [{"weight": 50, "pauseSeconds": 30}, {"weight": 100, "pauseSeconds": 30}]
    last = running(step=2, weight=100)
    now = T0 + timedelta(seconds=30)
    measured = Measurement(sample(500, 0), None)
    promoted = plan_rollout(
        given(last, canary=canary(steps, maxIncreaseOverStable=None), measurement=measured), now
    )
    # Then the new revision is stable and asks for ten workers, while the canary keeps its ten
    assert (promoted.stable_revision, promoted.canary_revision) == ("new", "new")
    assert (promoted.stable_replicas, promoted.canary_replicas) == (10, 10)
    assert promoted.rollout.phase == RolloutPhase.PROMOTING
    assert reasons(promoted)[-1] == RolloutReason.PROMOTED
    # When six stable workers of the new revision are ready, the canary shrinks to the rest
    partly = plan_rollout(
        given(promoted.rollout, stable_revision="new", stable_ready_replicas=6), now + timedelta(seconds=5)
    )
    assert (partly.stable_replicas, partly.canary_replicas, partly.canary_revision) == (10, 4, "new")
    assert partly.events == []
    # And once all ten are ready the canary goes and the pool is Healthy
    done = plan_rollout(
        given(partly.rollout, stable_revision="new", stable_ready_replicas=10), now + timedelta(seconds=9)
    )
    assert (done.stable_replicas, done.canary_replicas, done.canary_revision) == (10, 0, None)
    assert done.rollout.phase == RolloutPhase.HEALTHY
    assert done.events == []


def test_promote_full_from_a_small_step_keeps_the_canary_until_stable_is_ready() -> None:
    promoted = plan_rollout(given(running(), action="promote-full/new/t"), T0)
    assert (promoted.stable_revision, promoted.canary_revision, promoted.stable_replicas) == (
        "new",
        "new",
        10,
    )
    assert promoted.canary_replicas == 1
    assert promoted.rollout.phase == RolloutPhase.PROMOTING


def test_a_paused_pool_starts_no_canary_for_a_new_template() -> None:
    # Given spec.paused and a new template
    held = plan_rollout(
        given(RolloutStatus(phase=RolloutPhase.HEALTHY), canary_revision=None, paused=True), T0
    )
    # Then no canary runs and step 1 has not started
    assert (held.stable_revision, held.canary_revision, held.stable_replicas, held.canary_replicas) == (
        "old",
        None,
        10,
        0,
    )
    assert (held.rollout.phase, held.rollout.step) == (RolloutPhase.PAUSED, 0)
    assert reasons(held) == [RolloutReason.PAUSED]
    assert "spec.paused" in held.rollout.message
    # And holding again posts no second Event
    again = plan_rollout(given(held.rollout, canary_revision=None, paused=True), T0 + timedelta(minutes=1))
    assert (again.canary_revision, again.events) == (None, [])
    # When the pool is resumed, step 1 starts
    resumed = plan_rollout(given(again.rollout, canary_revision=None), T0 + timedelta(minutes=2))
    assert (resumed.canary_revision, resumed.rollout.step) == ("new", 1)
    assert reasons(resumed) == [RolloutReason.STARTED]


# --- Analysis window ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "elapsed", "window"),
    [
        ({"intervalSeconds": 30}, 30, 120),
        ({"intervalSeconds": 30, "scrapeIntervalSeconds": 15}, 30, 30),
        ({"intervalSeconds": 30, "scrapeIntervalSeconds": 15}, 90, 90),
        ({"intervalSeconds": 10, "scrapeIntervalSeconds": 1}, 600, 600),
        ({"intervalSeconds": 300, "scrapeIntervalSeconds": 60}, 300, 300),
    ],
)
def test_the_window_covers_the_step_and_at_least_two_scrapes(
    settings: dict[str, Any], elapsed: int, window: int
) -> None:
    assert analysis_window_seconds(running(), analysis(**settings), T0 + timedelta(seconds=elapsed)) == window


# --- Canary health -----------------------------------------------------------------------------


def test_a_silent_canary_while_stable_works_is_rolled_back_as_unhealthy() -> None:
    # Given a canary that finishes nothing while stable finishes hundreds of jobs
    rollout = running()
    settings = canary(noSamplesLimit=3)
    plans = []
    for tick in range(1, 4):
        plan = plan_rollout(
            given(rollout, canary=settings, measurement=Measurement(None, sample(900, 0))),
            T0 + timedelta(seconds=10 * tick),
        )
        plans.append(plan)
        rollout = plan.rollout
    # Then two silent analyses hold, the third rolls back with a reason that says so
    assert [p.rollout.phase for p in plans] == [
        RolloutPhase.PAUSED,
        RolloutPhase.PAUSED,
        RolloutPhase.DEGRADED,
    ]
    assert plans[-1].canary_replicas == 0
    unhealthy = plans[-1].events[-1]
    assert (unhealthy.type, unhealthy.reason) == ("Warning", RolloutReason.CANARY_UNHEALTHY)
    assert "finished no job in 3 analyses in a row" in unhealthy.message


def test_a_silent_canary_while_stable_is_silent_too_is_only_no_data() -> None:
    rollout = running()
    for tick in range(1, 6):
        plan = plan_rollout(
            given(rollout, canary=canary(noSamplesLimit=2), measurement=Measurement(None, sample(3, 0))),
            T0 + timedelta(seconds=10 * tick),
        )
        rollout = plan.rollout
    assert rollout.phase == RolloutPhase.PAUSED


def test_a_canary_that_loses_readiness_after_its_step_started_is_rolled_back_at_the_deadline() -> None:
    # Given step 1 started with its canary ready, then the canary worker stops being ready
    short = Canary.model_validate({**canary().to_dict(), "progressDeadlineSeconds": 60})
    unready = plan_rollout(given(running(), canary=short, canary_ready_replicas=0), T0 + timedelta(seconds=5))
    assert (unready.rollout.phase, unready.rollout.waiting_since) == (
        RolloutPhase.PROGRESSING,
        T0 + timedelta(seconds=5),
    )
    assert "0 of 1 canary workers ready" in unready.rollout.message
    assert progress_deadline_passed(unready.rollout, short, T0 + timedelta(seconds=65))
    # When it is still not ready at the deadline, the canary is rolled back as unhealthy
    plan = plan_rollout(
        given(unready.rollout, canary=short, canary_ready_replicas=0), T0 + timedelta(seconds=65)
    )
    assert (plan.rollout.phase, plan.canary_replicas) == (RolloutPhase.DEGRADED, 0)
    assert reasons(plan) == [RolloutReason.CANARY_UNHEALTHY]
    assert "not ready for 60s" in plan.events[0].message


def test_a_canary_ready_again_clears_its_unready_clock() -> None:
    unready = plan_rollout(given(running(), canary_ready_replicas=0), T0 + timedelta(seconds=5))
    ready = plan_rollout(given(unready.rollout, canary_ready_replicas=1), T0 + timedelta(seconds=6))
    assert (ready.rollout.waiting_since, ready.rollout.step_started_at) == (None, T0)


# --- The rollout clock -------------------------------------------------------------------------


def test_a_step_whose_pause_is_over_but_whose_analysis_holds_it_is_not_reconciled_every_tick() -> None:
    over = T0 + timedelta(seconds=45)
    assert step_pause_over(running(), canary(), over)
    # No analysis of the step yet, or the last one inconclusive: only the next analysis can end it
    assert not step_may_end(running(), canary(), over)
    inconclusive = AnalysisResult(time=T0 + timedelta(seconds=40), verdict=Verdict.INCONCLUSIVE)
    assert not step_may_end(running(last_analysis=inconclusive), canary(), over)
    assert step_may_end(running(last_analysis=inconclusive), canary(onNoData="Continue"), over)
    passed = AnalysisResult(time=T0 + timedelta(seconds=40), verdict=Verdict.PASSED)
    assert step_may_end(running(last_analysis=passed), canary(), over)
    assert not step_may_end(running(last_analysis=passed), canary(), T0 + timedelta(seconds=29))
    timed = Canary.model_validate({"steps": [{"weight": 10, "pauseSeconds": 30}]})
    assert step_may_end(running(), timed, over)


@pytest.mark.parametrize(
    ("policy", "phase", "step"),
    [
        ("Pause", RolloutPhase.PAUSED, 1),
        ("Continue", RolloutPhase.PROGRESSING, 2),
        ("Fail", RolloutPhase.DEGRADED, 1),
    ],
)
def test_on_no_data_applies_while_prometheus_is_unreachable(
    policy: str, phase: RolloutPhase, step: int
) -> None:
    # Given Prometheus cannot be reached when the step's pause is over (within consecutiveErrorLimit)
    plan = plan_rollout(
        given(running(), canary=canary(onNoData=policy), measurement=Measurement(None, None, "refused")),
        T0 + timedelta(seconds=30),
    )
    # Then onNoData decides: hold, go on, or count a failing verdict
    assert (plan.rollout.phase, plan.rollout.step) == (phase, step)
    assert reasons(plan)[0] == RolloutReason.ANALYSIS_ERROR


@pytest.mark.parametrize(
    ("restarts", "limit", "rolled_back"),
    [
        (None, 3, False),
        (0.0, 3, False),
        (2.0, 3, False),
        (3.0, 3, True),
        (7.0, 3, True),
        (1.0, 1, True),
    ],
)
def test_a_canary_whose_workers_restart_is_rolled_back_as_unhealthy_at_the_restart_limit(
    restarts: float | None, limit: int, rolled_back: bool
) -> None:
    # Given a canary that works well between restarts (no failed job, plenty of samples)
    measurement = Measurement(sample(900, 0), sample(900, 0), canary_restarts=restarts)
    # When an analysis counts its restarts
    plan = plan_rollout(
        given(running(), canary=canary(restartLimit=limit), measurement=measurement),
        T0 + timedelta(seconds=10),
    )
    # Then it rolls back at restartLimit, with a reason that says why
    assert (plan.rollout.phase == RolloutPhase.DEGRADED) == rolled_back
    if rolled_back:
        assert plan.canary_replicas == 0
        [unhealthy] = [event for event in plan.events if event.reason == RolloutReason.CANARY_UNHEALTHY]
        assert unhealthy.type == "Warning"
        assert (
            f"restarted {round(restarts or 0)} times within the analysis window (restartLimit {limit})"
            in (unhealthy.message)
        )
    else:
        assert RolloutReason.CANARY_UNHEALTHY not in reasons(plan)
