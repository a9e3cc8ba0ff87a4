"""A WorkerPool's status and Events from what a reconcile observed: table tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workerfleet.api.workerpool import RolloutPhase, RolloutStatus
from workerfleet.planners.status import (
    Event,
    Observation,
    PlannedRollout,
    PoolReason,
    merge_patch,
    plan_status,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def deployment(
    *,
    replicas: int = 2,
    ready: int = 2,
    updated: int = 2,
    available: str = "True",
    extra: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 3},
        "status": {
            "observedGeneration": 3,
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": updated,
            "conditions": [{"type": "Available", "status": available}, *(extra or [])],
        },
    }


def observe(**overrides: Any) -> Observation:
    values: dict[str, Any] = {
        "pool": "thumbs",
        "generation": 7,
        "desired_replicas": 2,
        "revision": "abc",
        "deployment": deployment(),
    }
    values.update(overrides)
    return Observation(**values)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


REPLICA_FAILURE = {
    "type": "ReplicaFailure",
    "status": "True",
    "message": 'pods "x" is forbidden: violates PodSecurity',
}
DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": "stuck",
}


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        (
            observe(),
            {
                "Ready": ("True", PoolReason.WORKERS_READY),
                "Available": ("True", PoolReason.MINIMUM_REPLICAS_AVAILABLE),
                "Progressing": ("False", PoolReason.ROLLOUT_COMPLETE),
                "Degraded": ("False", PoolReason.AS_EXPECTED),
            },
        ),
        (
            observe(deployment=deployment(ready=1)),
            {
                "Ready": ("False", PoolReason.WAITING_FOR_WORKERS),
                "Progressing": ("True", PoolReason.ROLLING_OUT),
            },
        ),
        (
            observe(desired_replicas=3),
            {
                "Ready": ("False", PoolReason.WAITING_FOR_WORKERS),
                "Progressing": ("True", PoolReason.ROLLING_OUT),
            },
        ),
        (
            observe(deployment=deployment(replicas=3, updated=2)),  # old workers still running
            {
                "Ready": ("False", PoolReason.WAITING_FOR_WORKERS),
                "Progressing": ("True", PoolReason.ROLLING_OUT),
            },
        ),
        (
            observe(deployment=deployment(available="False", ready=0)),
            {
                "Available": ("False", PoolReason.MINIMUM_REPLICAS_UNAVAILABLE),
                "Ready": ("False", PoolReason.WAITING_FOR_WORKERS),
            },
        ),
        (
            observe(deployment=deployment(ready=0, extra=[REPLICA_FAILURE])),
            {
                "Degraded": ("True", PoolReason.REPLICA_FAILURE),
                "Ready": ("False", PoolReason.REPLICA_FAILURE),
            },
        ),
        (
            observe(deployment=deployment(ready=1, extra=[DEADLINE])),
            {
                "Degraded": ("True", PoolReason.PROGRESS_DEADLINE_EXCEEDED),
                "Ready": ("False", PoolReason.PROGRESS_DEADLINE_EXCEEDED),
            },
        ),
        (
            observe(deployment=None),
            {
                "Ready": ("False", PoolReason.DEPLOYMENT_PENDING),
                "Available": ("Unknown", PoolReason.DEPLOYMENT_PENDING),
            },
        ),
        (
            observe(missing_job_types=["resize-image"]),
            {
                "Ready": ("False", PoolReason.JOB_TYPE_NOT_FOUND),
                "Degraded": ("True", PoolReason.JOB_TYPE_NOT_FOUND),
            },
        ),
        (
            observe(invalid_job_types={"resize-image": "bad schema"}),
            {
                "Ready": ("False", PoolReason.JOB_TYPE_INVALID),
                "Degraded": ("True", PoolReason.JOB_TYPE_INVALID),
            },
        ),
        (
            observe(refused_permissions=['JobType thief: get on secrets (group "")']),
            {
                "Ready": ("False", PoolReason.PERMISSION_NOT_DELEGABLE),
                "Degraded": ("True", PoolReason.PERMISSION_NOT_DELEGABLE),
            },
        ),
        (
            observe(apply_error="forbidden: attempt to grant extra privileges"),
            {"Ready": ("False", PoolReason.APPLY_FAILED), "Degraded": ("True", PoolReason.APPLY_FAILED)},
        ),
        (
            observe(name_conflict="ServiceAccount ci-worker exists and is not controlled by this pool"),
            {"Ready": ("False", PoolReason.NAME_CONFLICT), "Degraded": ("True", PoolReason.NAME_CONFLICT)},
        ),
        (
            observe(desired_replicas=0, deployment=deployment(replicas=0, ready=0, updated=0)),
            {"Ready": ("True", PoolReason.WORKERS_READY)},
        ),
    ],
)
def test_conditions(observation: Observation, expected: dict[str, tuple[str, str]]) -> None:
    status, _, _ = plan_status(observation, None, NOW)
    judged = conditions(status)
    for condition_type, value in expected.items():
        assert judged[condition_type] == value


def test_counts_selector_revision_and_generation() -> None:
    status, _, changed = plan_status(observe(deployment=deployment(replicas=3, ready=2)), None, NOW)
    assert changed
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"]) == (3, 2, 2)
    assert status["selector"] == "workerfleet.dev/pool=thumbs"
    assert status["stableRevision"] == "abc"
    assert status["observedGeneration"] == 7
    assert all(c["observedGeneration"] == 7 for c in status["conditions"])


def test_unchanged_observation_changes_nothing_and_says_nothing() -> None:
    first, _, _ = plan_status(observe(), None, NOW)
    second, events, changed = plan_status(observe(), first, NOW + timedelta(minutes=5))
    assert second == first
    assert not changed
    assert events == []


def test_transition_time_moves_only_when_status_flips() -> None:
    ready, _, _ = plan_status(observe(), None, NOW)
    later = NOW + timedelta(minutes=1)
    # a new message with the same status keeps the transition time
    scaled, _, changed = plan_status(observe(desired_replicas=2, revision="def"), ready, later)
    assert changed
    times = {c["type"]: c["lastTransitionTime"] for c in scaled["conditions"]}
    assert times["Ready"] == "2026-01-02T03:04:05Z"
    # a flip moves it
    waiting, _, _ = plan_status(observe(deployment=deployment(ready=1)), scaled, later)
    assert {c["type"]: c["lastTransitionTime"] for c in waiting["conditions"]}[
        "Ready"
    ] == "2026-01-02T03:05:05Z"


def test_events_on_degradation_recovery_and_readiness() -> None:
    ready, events, _ = plan_status(observe(), None, NOW)
    assert events == [Event("Normal", PoolReason.WORKERS_READY, "2 of 2 workers ready, 2 on revision abc")]
    missing, events, _ = plan_status(observe(missing_job_types=["resize-image"]), ready, NOW)
    assert [(e.type, e.reason) for e in events] == [("Warning", PoolReason.JOB_TYPE_NOT_FOUND)]
    assert "resize-image" in events[0].message
    _, repeated, _ = plan_status(observe(missing_job_types=["resize-image"]), missing, NOW)
    assert repeated == []
    _, recovered, _ = plan_status(observe(), missing, NOW)
    assert [(e.type, e.reason) for e in recovered] == [
        ("Normal", PoolReason.RECOVERED),
        ("Normal", PoolReason.WORKERS_READY),
    ]


def test_fields_owned_by_other_features_are_kept() -> None:
    current = {"queue": {"depth": 12}, "rollout": {"phase": "Healthy"}}
    status, _, _ = plan_status(observe(), current, NOW)
    assert status["queue"] == {"depth": 12}
    assert status["rollout"] == {"phase": "Healthy"}


@pytest.mark.parametrize(
    ("current", "desired", "patch"),
    [
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"r": {"x": 1, "y": 2}}, {"r": {"x": 1}}, {"r": {"y": None}}),
        ({"r": {"x": 1}}, {"r": {"x": 2, "z": [1]}}, {"r": {"x": 2, "z": [1]}}),
        ({"c": [1, 2]}, {"c": [1]}, {"c": [1]}),
    ],
)
def test_merge_patch_removes_what_went_away(
    current: dict[str, Any], desired: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert merge_patch(current, desired) == patch


def test_a_rolled_back_canary_degrades_the_pool_without_a_second_event() -> None:
    rollout = PlannedRollout("old", "new", RolloutStatus(phase=RolloutPhase.DEGRADED, message="30%"))
    status, events, changed = plan_status(observe(rollout=rollout), None, NOW)
    assert changed
    assert conditions(status)["Degraded"] == ("True", PoolReason.ROLLOUT_FAILED)
    assert all(event.reason != PoolReason.ROLLOUT_FAILED for event in events)
    assert (status["stableRevision"], status["canaryRevision"]) == ("old", "new")


def test_replicas_count_both_tracks_and_a_running_canary_is_progressing() -> None:
    canary = {
        "metadata": {"generation": 1},
        "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1},
    }
    rollout = PlannedRollout("old", "new", RolloutStatus(phase=RolloutPhase.PROGRESSING, step=1))
    status, _, _ = plan_status(observe(canary_deployment=canary, rollout=rollout), None, NOW)
    assert status["canaryReplicas"] == 2
    assert status["replicas"] == plan_status(observe(), None, NOW)[0]["replicas"] + 2
    assert conditions(status)["Progressing"] == ("True", PoolReason.CANARY_RUNNING)
    settled = PlannedRollout("new", None, RolloutStatus(phase=RolloutPhase.HEALTHY))
    done, _, _ = plan_status(observe(rollout=settled), status, NOW)
    assert "canaryRevision" not in done


def test_a_taken_name_is_a_warning_event_naming_the_object() -> None:
    message = "ServiceAccount ci-worker exists and is not controlled by this pool"
    _, events, _ = plan_status(observe(name_conflict=message), None, NOW)
    assert Event("Warning", PoolReason.NAME_CONFLICT, message) in events


def test_a_refused_permission_is_named_with_the_fix() -> None:
    refused = observe(refused_permissions=['JobType thief: get on secrets (group "")'])
    status, events, _ = plan_status(refused, None, NOW)
    [ready] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert 'JobType thief: get on secrets (group "")' in ready["message"]
    assert "rbac.delegableWorkerPermissions" in ready["message"]
    assert [(e.type, e.reason) for e in events] == [("Warning", PoolReason.PERMISSION_NOT_DELEGABLE)]


def test_a_revocation_that_failed_is_added_to_why_the_pool_is_blocked() -> None:
    failed = "revoking the workers' permissions failed: the server is away"
    status, events, _ = plan_status(observe(missing_job_types=["resize"], apply_error=failed), None, NOW)
    [ready] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["reason"], ready["message"].endswith(failed)) == (PoolReason.JOB_TYPE_NOT_FOUND, True)
    assert "JobType resize not found" in ready["message"]
    assert [(e.type, e.reason) for e in events] == [("Warning", PoolReason.JOB_TYPE_NOT_FOUND)]


def test_a_pool_unguarded_by_admission_is_not_ready_whatever_else_holds() -> None:
    missing = "ValidatingAdmissionPolicy wf-pool-author not found"
    unguarded = observe(admission_policy_missing=missing, missing_job_types=["resize"])
    status, events, _ = plan_status(unguarded, None, NOW)
    judged = conditions(status)
    assert judged["Ready"] == ("False", PoolReason.ADMISSION_POLICY_MISSING)
    assert judged["Degraded"] == ("True", PoolReason.ADMISSION_POLICY_MISSING)
    [ready] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert ready["message"] == missing
    assert [(e.type, e.reason) for e in events] == [("Warning", PoolReason.ADMISSION_POLICY_MISSING)]


KEDA_REFUSAL = ("AddressNotAllowed", "queue address evil:6379 is not in the operator's allowlist")
POLLER_LEFT = [
    {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    for kind, status, reason in (
        ("QueueReachable", "True", "DepthRead"),
        ("ScalingActive", "True", "ScalingOnQueueDepth"),
        ("Fallback", "False", "QueueReadable"),
    )
]


@pytest.mark.parametrize(
    ("keda", "refusal", "expected"),
    [
        # KEDA refused: the same conditions and reason the built-in engine gives, no Fallback of ours
        (
            True,
            KEDA_REFUSAL,
            {
                "QueueReachable": ("False", "AddressNotAllowed"),
                "ScalingActive": ("False", "AddressNotAllowed"),
            },
        ),
        (
            True,
            ("CredentialsNotGranted", "queue credentials: the operator may not read Secret a/b"),
            {
                "QueueReachable": ("False", "CredentialsNotGranted"),
                "ScalingActive": ("False", "CredentialsNotGranted"),
            },
        ),
        # KEDA given the queue: it reports on its ScaledObject; the built-in poller's are dropped
        (True, None, {}),
        # the built-in engine's poller owns them: left as they are
        (False, None, {c["type"]: (c["status"], c["reason"]) for c in POLLER_LEFT}),
    ],
)
def test_keda_mode_says_what_keda_was_refused_and_nothing_else_of_the_queue(
    keda: bool, refusal: tuple[str, str] | None, expected: dict[str, tuple[str, str]]
) -> None:
    current = {"conditions": POLLER_LEFT}
    status, events, _ = plan_status(observe(scaled_by_keda=keda, queue_refusal=refusal), current, NOW)
    queue_conditions = {
        kind: value
        for kind, value in conditions(status).items()
        if kind in ("QueueReachable", "ScalingActive", "Fallback")
    }
    assert queue_conditions == expected
    warnings = [(event.reason, event.message) for event in events if event.type == "Warning"]
    assert warnings == ([refusal] if refusal else [])


def test_a_keda_refusal_warns_once_and_clears_when_lifted() -> None:
    refused, events, _ = plan_status(observe(scaled_by_keda=True, queue_refusal=KEDA_REFUSAL), None, NOW)
    assert [(e.type, e.reason) for e in events] == [
        ("Warning", "AddressNotAllowed"),
        ("Normal", "WorkersReady"),
    ]
    again, events, changed = plan_status(
        observe(scaled_by_keda=True, queue_refusal=KEDA_REFUSAL), refused, NOW + timedelta(minutes=1)
    )
    assert (events, changed) == ([], False)
    lifted, events, changed = plan_status(observe(scaled_by_keda=True), again, NOW)
    assert changed
    assert events == []
    assert "QueueReachable" not in conditions(lifted)
