"""Autoscaling decisions: activation, cooldown, fallback and deadlines, as a table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workerfleet.planners.scaling import (
    Pause,
    PauseAnnotationError,
    QueueConditions,
    QueueState,
    QueueStatusPlan,
    ScalingDecision,
    ScalingReason,
    ScalingSettings,
    deadline_replicas,
    decide,
    judge_queue,
    pause_from_annotations,
    plan_queue_status,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
AGO_10S = NOW - timedelta(seconds=10)
AGO_1H = NOW - timedelta(hours=1)

TO_ZERO = ScalingSettings(
    min_replicas=0,
    max_replicas=10,
    target_depth_per_replica=50,
    activation_depth=0,
    cooldown_seconds=300,
    failure_threshold=3,
    fallback_replicas=4,
)
AT_LEAST_ONE = ScalingSettings(
    min_replicas=1, max_replicas=10, target_depth_per_replica=50, activation_depth=0, cooldown_seconds=300
)
ACTIVATE_ABOVE_5 = ScalingSettings(
    min_replicas=0, max_replicas=10, target_depth_per_replica=50, activation_depth=5, cooldown_seconds=60
)


@pytest.mark.parametrize(
    ("policy", "state", "expected"),
    [
        # depth is served as read; the HPA turns 400 / 50 into 8 replicas
        (
            TO_ZERO,
            QueueState(replicas=3, depth=400, consecutive_failures=0),
            ScalingDecision(400, None, None, False),
        ),
        # activation from zero: the HPA cannot, the operator sets one replica
        (
            TO_ZERO,
            QueueState(replicas=0, depth=1, consecutive_failures=0),
            ScalingDecision(1, 1, None, False),
        ),
        # no work at zero: stay at zero, the idle clock starts
        (
            TO_ZERO,
            QueueState(replicas=0, depth=0, consecutive_failures=0),
            ScalingDecision(0, None, NOW, False),
        ),
        # activation is strictly above activationDepth
        (
            ACTIVATE_ABOVE_5,
            QueueState(replicas=0, depth=5, consecutive_failures=0),
            ScalingDecision(5, None, NOW, False),
        ),
        (
            ACTIVATE_ABOVE_5,
            QueueState(replicas=0, depth=6, consecutive_failures=0),
            ScalingDecision(6, 1, None, False),
        ),
        # idle at one replica, cooldown not over: keep waiting, keep the clock
        (
            TO_ZERO,
            QueueState(replicas=1, depth=0, consecutive_failures=0, idle_since=AGO_10S),
            ScalingDecision(0, None, AGO_10S, False),
        ),
        # idle at one replica past the cooldown: down to zero
        (
            TO_ZERO,
            QueueState(replicas=1, depth=0, consecutive_failures=0, idle_since=AGO_1H),
            ScalingDecision(0, 0, AGO_1H, False),
        ),
        # idle past the cooldown but the HPA has not come down to one yet: no jump N -> 0
        (
            TO_ZERO,
            QueueState(replicas=4, depth=0, consecutive_failures=0, idle_since=AGO_1H),
            ScalingDecision(0, None, AGO_1H, False),
        ),
        # work arriving resets the idle clock
        (
            TO_ZERO,
            QueueState(replicas=1, depth=3, consecutive_failures=0, idle_since=AGO_1H),
            ScalingDecision(3, None, None, False),
        ),
        # minReplicas >= 1 never scales to zero, however long idle
        (
            AT_LEAST_ONE,
            QueueState(replicas=1, depth=0, consecutive_failures=0, idle_since=AGO_1H),
            ScalingDecision(0, None, AGO_1H, False),
        ),
        # ... and brings a pool found at zero back to its minimum
        (
            AT_LEAST_ONE,
            QueueState(replicas=0, depth=0, consecutive_failures=0),
            ScalingDecision(0, 1, NOW, False),
        ),
        # a failed read below the threshold: serve nothing, change nothing
        (
            TO_ZERO,
            QueueState(replicas=3, depth=None, consecutive_failures=2, idle_since=AGO_10S),
            ScalingDecision(None, None, AGO_10S, False),
        ),
        # at the threshold: hold the fallback replicas (4 * 50 served)
        (
            TO_ZERO,
            QueueState(replicas=3, depth=None, consecutive_failures=3),
            ScalingDecision(200, None, None, True),
        ),
        # in fallback at zero: the operator wakes the pool to the fallback count
        (
            TO_ZERO,
            QueueState(replicas=0, depth=None, consecutive_failures=5),
            ScalingDecision(200, 4, None, True),
        ),
        # no fallback configured: failures never scale anything
        (
            AT_LEAST_ONE,
            QueueState(replicas=2, depth=None, consecutive_failures=50),
            ScalingDecision(None, None, None, False),
        ),
    ],
)
def test_decisions(policy: ScalingSettings, state: QueueState, expected: ScalingDecision) -> None:
    assert decide(policy, state, NOW) == expected


@pytest.mark.parametrize(
    ("depth", "oldest_age", "deadline", "throughput", "replicas"),
    [
        (100, 0.0, 100, 1.0, 1),  # 100 jobs, 100 s, 1 job/s per replica
        (100, 50.0, 100, 1.0, 2),  # half the time left: twice the replicas
        (101, 50.0, 100, 1.0, 3),  # rounds up
        (1000, 90.0, 100, 2.0, 50),  # 1000 / (2 * 10)
        (100, 100.0, 100, 1.0, 0),  # no time left: nothing to gain
        (100, 150.0, 100, 1.0, 0),  # already expired
        (100, None, 100, 1.0, 0),  # age unknown
        (100, 10.0, None, 1.0, 0),  # no deadline
        (100, 10.0, 100, None, 0),  # throughput not observed yet
        (100, 10.0, 100, 0.0, 0),  # nothing completes: no finite answer
        (0, 10.0, 100, 1.0, 0),  # nothing waiting
    ],
)
def test_deadline_replicas(
    depth: int, oldest_age: float | None, deadline: int | None, throughput: float | None, replicas: int
) -> None:
    assert deadline_replicas(depth, oldest_age, deadline, throughput) == replicas


def test_deadline_raises_the_served_value_within_max_replicas() -> None:
    policy = ScalingSettings(
        min_replicas=1,
        max_replicas=10,
        target_depth_per_replica=50,
        activation_depth=0,
        cooldown_seconds=60,
        deadline_seconds=100,
    )
    # 100 jobs would ask for 2 replicas by depth, but the deadline needs 4 (100 / (1 * 25))
    urgent = QueueState(
        replicas=2, depth=100, consecutive_failures=0, oldest_age_seconds=75, throughput_per_replica=1.0
    )
    assert decide(policy, urgent, NOW).served_value == 200
    # never more than maxReplicas' worth
    hopeless = QueueState(
        replicas=2, depth=100, consecutive_failures=0, oldest_age_seconds=99, throughput_per_replica=0.1
    )
    assert decide(policy, hopeless, NOW).served_value == 500


@pytest.mark.parametrize(
    ("decision", "depth", "reachable", "active", "fallback"),
    [
        (
            ScalingDecision(40, None, None, False),
            40,
            ("True", "DepthRead"),
            ("True", "ScalingOnQueueDepth"),
            ("False", "QueueReadable"),
        ),
        (
            ScalingDecision(None, None, None, False),
            None,
            ("False", "QueueUnreachable"),
            ("False", "DepthUnknown"),
            ("False", "QueueReadable"),
        ),
        (
            ScalingDecision(150, None, None, True),
            None,
            ("False", "QueueUnreachable"),
            ("False", "FallbackActive"),
            ("True", "FallbackActive"),
        ),
    ],
)
def test_conditions_for_a_poll(
    decision: ScalingDecision,
    depth: int | None,
    reachable: tuple[str, str],
    active: tuple[str, str],
    fallback: tuple[str, str],
) -> None:
    judged = judge_queue(decision, depth, 0 if depth is not None else 3, "refused", 3)
    assert judged.queue_reachable[:2] == reachable
    assert judged.scaling_active[:2] == active
    assert judged.fallback[:2] == fallback
    if depth is None:
        assert "refused" in judged.queue_reachable[2]


READABLE = QueueConditions(
    queue_reachable=("True", "DepthRead", "1 jobs waiting"),
    scaling_active=("True", "ScalingOnQueueDepth", "serving depth 1 to the HPA"),
    fallback=("False", "QueueReadable", ""),
)
UNREACHABLE = QueueConditions(
    queue_reachable=("False", "QueueUnreachable", "3 failed reads in a row: refused"),
    scaling_active=("False", "FallbackActive", "scaling on the fallback replica count, not on depth"),
    fallback=("True", "FallbackActive", "queue unreadable; holding 4 replicas"),
)


def _status_after(queue: dict[str, object], judged: QueueConditions, at: datetime) -> dict[str, Any]:
    plan = plan_queue_status({}, 1, queue, judged, at)
    assert plan.patch is not None
    return plan.patch


def test_polls_of_an_unchanged_queue_write_nothing_however_long_it_stays_so() -> None:
    status = _status_after({"depth": 1, "consecutiveFailures": 0}, READABLE, AGO_1H)
    for later in (AGO_10S, NOW, NOW + timedelta(days=1)):
        plan = plan_queue_status(status, 1, {"depth": 1, "consecutiveFailures": 0}, READABLE, later)
        assert plan == QueueStatusPlan(None, [])


def test_review_and_dead_letter_depths_beside_the_depth_do_not_make_every_poll_a_write() -> None:
    status = _status_after({"depth": 1, "consecutiveFailures": 0}, READABLE, AGO_1H)
    status["queue"] = {**status["queue"], "reviewDepth": 3, "deadLetterDepth": 0}
    plan = plan_queue_status(status, 1, {"depth": 1, "consecutiveFailures": 0}, READABLE, NOW)
    assert plan == QueueStatusPlan(None, [])


@pytest.mark.parametrize(
    ("queue", "judged", "events"),
    [
        ({"depth": 2, "consecutiveFailures": 0}, READABLE, []),
        ({"consecutiveFailures": 3}, UNREACHABLE, ["QueueUnreachable", "FallbackActive"]),
    ],
)
def test_a_new_depth_or_a_flipped_condition_is_written_with_the_events_of_the_flip(
    queue: dict[str, object], judged: QueueConditions, events: list[str]
) -> None:
    status = _status_after({"depth": 1, "consecutiveFailures": 0}, READABLE, AGO_1H)
    plan = plan_queue_status(status, 1, queue, judged, NOW)
    assert plan.patch is not None
    assert plan.patch["queue"] == queue
    assert [event.reason for event in plan.events] == events


def test_fallback_ending_is_an_event_too() -> None:
    status = _status_after({"consecutiveFailures": 3}, UNREACHABLE, AGO_1H)
    plan = plan_queue_status(status, 1, {"depth": 1, "consecutiveFailures": 0}, READABLE, NOW)
    assert [event.reason for event in plan.events] == ["FallbackEnded"]


@pytest.mark.parametrize(
    ("annotations", "pause"),
    [
        ({}, None),
        ({"workerfleet.dev/autoscaling-paused": "true"}, Pause()),
        ({"workerfleet.dev/autoscaling-paused": "True"}, Pause()),
        ({"workerfleet.dev/autoscaling-paused": "false"}, None),
        ({"workerfleet.dev/autoscaling-paused-replicas": "3"}, Pause(replicas=3)),
        (
            {
                "workerfleet.dev/autoscaling-paused": "false",
                "workerfleet.dev/autoscaling-paused-replicas": "0",
            },
            Pause(0),
        ),
    ],
)
def test_pause_annotations(annotations: dict[str, str], pause: Pause | None) -> None:
    assert pause_from_annotations(annotations) == pause


@pytest.mark.parametrize("value", ["-1", "three", "2.5", ""])
def test_bad_paused_replicas_name_the_annotation(value: str) -> None:
    with pytest.raises(PauseAnnotationError, match="autoscaling-paused-replicas must be a whole number"):
        pause_from_annotations({"workerfleet.dev/autoscaling-paused-replicas": value})


@pytest.mark.parametrize(
    ("pause", "state", "expected"),
    [
        # hold: serve exactly the current replicas' worth, whatever the depth
        (
            Pause(),
            QueueState(replicas=3, depth=10_000, consecutive_failures=0),
            ScalingDecision(150, None, None, False),
        ),
        # hold at zero: no activation despite work
        (
            Pause(),
            QueueState(replicas=0, depth=500, consecutive_failures=0),
            ScalingDecision(0, None, None, False),
        ),
        # a given count: set it and hold it, even while the queue is unreadable
        (
            Pause(5),
            QueueState(replicas=2, depth=None, consecutive_failures=9),
            ScalingDecision(250, 5, None, False),
        ),
        (
            Pause(2),
            QueueState(replicas=2, depth=0, consecutive_failures=0, idle_since=AGO_1H),
            ScalingDecision(100, None, None, False),
        ),
    ],
)
def test_paused_autoscaling_holds(pause: Pause, state: QueueState, expected: ScalingDecision) -> None:
    assert decide(TO_ZERO, state, NOW, pause) == expected


@pytest.mark.parametrize(
    ("min_replicas", "pause", "replicas", "held"),
    [
        (0, Pause(50), 2, 10),  # above maxReplicas: the HPA would scale it back to 10 at every sync
        (3, Pause(1), 5, 3),  # below minReplicas: the HPA would scale it up to 3
        (3, Pause(0), 5, 0),  # zero: the HPA is inert at zero, so nothing fights it
        (0, Pause(), 12, 10),  # holding a count the HPA would not keep either
        (3, Pause(7), 2, 7),
    ],
)
def test_a_paused_count_outside_min_and_max_is_held_within_them(
    min_replicas: int, pause: Pause, replicas: int, held: int
) -> None:
    policy = dataclasses.replace(TO_ZERO, min_replicas=min_replicas)
    decision = decide(policy, QueueState(replicas=replicas, depth=0, consecutive_failures=0), NOW, pause)
    assert decision.served_value == held * policy.target_depth_per_replica
    assert decision.replicas == (None if held == replicas else held)


def test_a_queue_not_tried_says_why_with_its_own_reason_and_warning() -> None:
    # Given a queue last unreachable, now refused before any read (a Secret nobody granted)
    refusal = (ScalingReason.CREDENTIALS_NOT_GRANTED, "bind ClusterRole workerfleet-queue-credentials")
    judged = judge_queue(ScalingDecision(None, None, None, False), None, 1, None, 3, refusal=refusal)
    assert judged.queue_reachable == ("False", *refusal)
    # Then the change of reason alone is news: a Warning names the grant
    status = _status_after({"consecutiveFailures": 3}, UNREACHABLE, AGO_1H)
    plan = plan_queue_status(status, 1, {"consecutiveFailures": 4}, judged, NOW)
    assert [(event.type, event.reason) for event in plan.events][:1] == [
        ("Warning", ScalingReason.CREDENTIALS_NOT_GRANTED)
    ]
