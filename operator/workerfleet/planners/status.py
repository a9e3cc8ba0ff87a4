"""A WorkerPool's status from what was observed: pure, no I/O.

Conditions follow Kubernetes conventions (type/status/reason/message/observedGeneration/
lastTransitionTime that moves only when status flips). Events are derived from condition changes,
so a steady state produces neither status writes nor Events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workerfleet.api.conditions import (
    Condition,
    ConditionStatus,
    ConditionUpdate,
    find_condition,
    set_condition,
)
from workerfleet.api.workerpool import RolloutPhase, RolloutStatus
from workerfleet.api.workerpool import WorkerPoolConditionType as Type
from workerfleet.planners.children import pool_selector

TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


class PoolReason:
    """Condition and Event reasons: part of the API, so constants, never ad-hoc strings."""

    JOB_TYPE_NOT_FOUND = "JobTypeNotFound"
    JOB_TYPE_INVALID = "JobTypeInvalid"
    PERMISSION_NOT_DELEGABLE = "PermissionNotDelegable"
    ADMISSION_POLICY_MISSING = "AdmissionPolicyMissing"
    APPLY_FAILED = "ApplyFailed"
    NAME_CONFLICT = "NameConflict"
    WORKERS_READY = "WorkersReady"
    WAITING_FOR_WORKERS = "WaitingForWorkers"
    DEPLOYMENT_PENDING = "DeploymentPending"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_COMPLETE = "RolloutComplete"
    REPLICA_FAILURE = "ReplicaFailure"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    AS_EXPECTED = "AsExpected"
    MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
    MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
    RECOVERED = "Recovered"
    CANARY_RUNNING = "CanaryRunning"
    ROLLOUT_FAILED = "RolloutFailed"


@dataclass(frozen=True)
class PlannedRollout:
    """The rollout's part of the pool's status, as planned."""

    stable_revision: str
    canary_revision: str | None
    rollout: RolloutStatus

    def status_fields(self) -> dict[str, Any]:
        return {
            "stableRevision": self.stable_revision,
            "canaryRevision": self.canary_revision,
            "rollout": self.rollout.to_dict(),
        }


@dataclass(frozen=True)
class Observation:
    """What one reconcile saw and did."""

    pool: str
    generation: int
    desired_replicas: int
    revision: str
    deployment: Mapping[str, Any] | None
    missing_job_types: Sequence[str] = ()
    invalid_job_types: Mapping[str, str] | None = None
    refused_permissions: Sequence[str] = ()
    """JobType rules beyond the delegable set, as `describe` words them: no Role is written."""
    admission_policy_missing: str | None = None
    """Why the admission policies that check pool authors are not in force: no child is written."""
    apply_error: str | None = None
    name_conflict: str | None = None
    """Why a child could not be applied: its name is taken by an object the pool does not control."""
    canary_deployment: Mapping[str, Any] | None = None
    rollout: PlannedRollout | None = None
    """The canary rollout as planned; None when it was not carried out (its children not applied)."""
    scaled_by_keda: bool = False
    """autoscaling.engine keda: the queue conditions say only what KEDA may not be given."""
    queue_refusal: tuple[str, str] | None = None
    """KEDA mode: (reason, message) why KEDA is given no ScaledObject (an address off the allowlist, a
    Secret of a namespace that did not opt in), reported as the built-in engine reports it."""


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def _deployment_condition(deployment: Mapping[str, Any], condition_type: str) -> Mapping[str, Any] | None:
    for condition in deployment.get("status", {}).get("conditions") or []:
        if condition.get("type") == condition_type:
            return dict(condition)
    return None


def _updater(generation: int) -> Callable[[Type, ConditionStatus, str, str], ConditionUpdate]:
    def update(kind: Type, status: ConditionStatus, reason: str, message: str) -> ConditionUpdate:
        return ConditionUpdate(
            type=kind.value, status=status, reason=reason, message=message, observed_generation=generation
        )

    return update


def _blocked(observation: Observation) -> list[ConditionUpdate] | None:
    """Conditions for a pool that cannot be reconciled as written, or None when it can."""
    update = _updater(observation.generation)
    if observation.admission_policy_missing is not None:
        message = observation.admission_policy_missing
        reason = PoolReason.ADMISSION_POLICY_MISSING
    elif observation.missing_job_types:
        missing = ", ".join(observation.missing_job_types)
        message = f"JobType {missing} not found in this namespace: create it, or remove it from spec.jobTypes"
        reason = PoolReason.JOB_TYPE_NOT_FOUND
    elif observation.invalid_job_types:
        problems = "; ".join(
            f"{name}: {error}" for name, error in sorted(observation.invalid_job_types.items())
        )
        message = f"JobType spec not usable: {problems}"
        reason = PoolReason.JOB_TYPE_INVALID
    elif observation.refused_permissions:
        refused = "; ".join(observation.refused_permissions)
        message = (
            f"not delegable to workers (rbac.delegableWorkerPermissions): {refused}."
            " Remove the rule from the JobType, or ask the cluster admin to make it delegable"
        )
        reason = PoolReason.PERMISSION_NOT_DELEGABLE
    elif observation.name_conflict is not None:
        message = observation.name_conflict
        reason = PoolReason.NAME_CONFLICT
    elif observation.apply_error is not None:
        message = observation.apply_error
        reason = PoolReason.APPLY_FAILED
    else:
        return None
    if reason != PoolReason.APPLY_FAILED and observation.apply_error is not None:
        message = f"{message}; {observation.apply_error}"  # a revocation that failed, retried
    return [update(Type.READY, FALSE, reason, message), update(Type.DEGRADED, TRUE, reason, message)]


def _judge(observation: Observation) -> list[ConditionUpdate]:
    blocked = _blocked(observation)
    if blocked is not None:
        return blocked
    update = _updater(observation.generation)
    deployment = observation.deployment
    if deployment is None:
        pending = "waiting for the Deployment to be created"
        return [
            update(Type.READY, FALSE, PoolReason.DEPLOYMENT_PENDING, pending),
            update(Type.AVAILABLE, UNKNOWN, PoolReason.DEPLOYMENT_PENDING, pending),
            update(Type.PROGRESSING, TRUE, PoolReason.DEPLOYMENT_PENDING, pending),
            update(Type.DEGRADED, FALSE, PoolReason.AS_EXPECTED, ""),
        ]
    status = deployment.get("status", {})
    desired = observation.desired_replicas
    ready = status.get("readyReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    observed = (status.get("observedGeneration") or 0) >= deployment["metadata"].get("generation", 0)
    rolling = not observed or updated < desired or total > desired or ready < desired
    progress = f"{ready} of {desired} workers ready, {updated} on revision {observation.revision}"

    available = _deployment_condition(deployment, "Available")
    if available is None:
        available_update = update(Type.AVAILABLE, UNKNOWN, PoolReason.DEPLOYMENT_PENDING, progress)
    elif available.get("status") == "True":
        available_update = update(Type.AVAILABLE, TRUE, PoolReason.MINIMUM_REPLICAS_AVAILABLE, progress)
    else:
        available_update = update(Type.AVAILABLE, FALSE, PoolReason.MINIMUM_REPLICAS_UNAVAILABLE, progress)

    failure = _deployment_condition(deployment, "ReplicaFailure")
    progressing = _deployment_condition(deployment, "Progressing")
    if failure is not None and failure.get("status") == "True":
        degraded = update(Type.DEGRADED, TRUE, PoolReason.REPLICA_FAILURE, str(failure.get("message", "")))
    elif progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        degraded = update(
            Type.DEGRADED, TRUE, PoolReason.PROGRESS_DEADLINE_EXCEEDED, str(progressing.get("message", ""))
        )
    else:
        degraded = update(Type.DEGRADED, FALSE, PoolReason.AS_EXPECTED, "")

    if degraded.status == TRUE:
        ready_update = update(Type.READY, FALSE, degraded.reason, degraded.message)
    elif rolling:
        ready_update = update(Type.READY, FALSE, PoolReason.WAITING_FOR_WORKERS, progress)
    else:
        ready_update = update(Type.READY, TRUE, PoolReason.WORKERS_READY, progress)
    progressing_update = (
        update(Type.PROGRESSING, TRUE, PoolReason.ROLLING_OUT, progress)
        if rolling
        else update(Type.PROGRESSING, FALSE, PoolReason.ROLLOUT_COMPLETE, progress)
    )
    return _with_rollout(observation, [ready_update, available_update, progressing_update, degraded])


def _with_rollout(observation: Observation, judged: list[ConditionUpdate]) -> list[ConditionUpdate]:
    """A running canary is Progressing; a rolled-back or aborted one leaves the pool Degraded (the
    rollout's own Warning Event has the numbers, so no second Event comes from the condition)."""
    if observation.rollout is None:
        return judged
    phase = observation.rollout.rollout.phase
    update = _updater(observation.generation)
    message = observation.rollout.rollout.message
    result = []
    for condition in judged:
        if condition.type == Type.PROGRESSING.value and phase in (
            RolloutPhase.PROGRESSING,
            RolloutPhase.PAUSED,
            RolloutPhase.PROMOTING,
        ):
            result.append(update(Type.PROGRESSING, TRUE, PoolReason.CANARY_RUNNING, message))
        elif (
            condition.type == Type.DEGRADED.value
            and phase == RolloutPhase.DEGRADED
            and condition.status != TRUE
        ):
            result.append(update(Type.DEGRADED, TRUE, PoolReason.ROLLOUT_FAILED, message))
        else:
            result.append(condition)
    return result


POLLER_CONDITIONS = frozenset({Type.QUEUE_REACHABLE, Type.SCALING_ACTIVE, Type.FALLBACK})
"""What the built-in engine's poller says of the queue; in KEDA mode, KEDA's ScaledObject says it."""
KEDA_REFUSED = "KEDA is given no ScaledObject, so nothing scales the pool: its replicas are held"


def _keda_queue_conditions(
    observation: Observation, conditions: list[Condition], now: datetime
) -> list[Condition]:
    """KEDA mode: QueueReachable and ScalingActive False with the refusal's reason, as the built-in
    engine says it; with no refusal, none of the poller's conditions (left from the built-in engine)."""
    if not observation.scaled_by_keda:
        return conditions
    if observation.queue_refusal is None:
        return [condition for condition in conditions if condition.type not in POLLER_CONDITIONS]
    reason, message = observation.queue_refusal
    update = _updater(observation.generation)
    kept = [condition for condition in conditions if condition.type != Type.FALLBACK]
    for judged in (
        update(Type.QUEUE_REACHABLE, FALSE, reason, message),
        update(Type.SCALING_ACTIVE, FALSE, reason, KEDA_REFUSED),
    ):
        kept = set_condition(kept, judged, now)
    return kept


def plan_status(
    observation: Observation, current: Mapping[str, Any] | None, now: datetime
) -> tuple[dict[str, Any], list[Event], bool]:
    """The pool's new status, the Events its condition changes deserve, and whether it changed."""
    current = dict(current or {})
    previous = [Condition.model_validate(condition) for condition in current.get("conditions") or []]
    conditions = previous
    for judged in _judge(observation):
        conditions = set_condition(conditions, judged, now.replace(microsecond=0))
    conditions = _keda_queue_conditions(observation, conditions, now.replace(microsecond=0))
    deployment_status = (observation.deployment or {}).get("status", {})
    canary_status = (observation.canary_deployment or {}).get("status", {})

    def count(field: str) -> int:
        return int(deployment_status.get(field) or 0) + int(canary_status.get(field) or 0)

    status: dict[str, Any] = {
        **current,
        "observedGeneration": observation.generation,
        "replicas": count("replicas"),
        "readyReplicas": count("readyReplicas"),
        "availableReplicas": count("availableReplicas"),
        "canaryReplicas": int(canary_status.get("replicas") or 0),
        "selector": pool_selector(observation.pool),
        "stableRevision": observation.revision,
        **(observation.rollout.status_fields() if observation.rollout else {}),
        "conditions": [condition.to_dict() for condition in conditions],
    }
    status = {key: value for key, value in status.items() if value is not None}
    normalized_current = {**current, "conditions": [condition.to_dict() for condition in previous]}
    return status, _events(previous, conditions), status != normalized_current


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that turns `current` into `desired`: keys that went away become
    null, nested objects are patched key by key, everything else is replaced."""
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif value != old:
            patch[key] = value
    return patch


def queue_refused_event(before: Sequence[Condition], after: Sequence[Condition]) -> Event | None:
    """A Warning when QueueReachable turns False, or False for a new reason: the user acts on it."""
    old = find_condition(before, Type.QUEUE_REACHABLE)
    new = find_condition(after, Type.QUEUE_REACHABLE)
    if new is None or new.status != FALSE:
        return None
    if old is not None and (old.status, old.reason) == (FALSE, new.reason):
        return None
    return Event("Warning", new.reason, new.message)


def _events(before: Sequence[Condition], after: Sequence[Condition]) -> list[Event]:
    refused = queue_refused_event(before, after)
    events = [] if refused is None else [refused]
    for kind in (Type.DEGRADED, Type.READY):
        old = find_condition(before, kind.value)
        new = find_condition(after, kind.value)
        if new is None or (old is not None and (old.status, old.reason) == (new.status, new.reason)):
            continue
        if kind == Type.DEGRADED and new.status == TRUE and new.reason == PoolReason.ROLLOUT_FAILED:
            continue
        if kind == Type.DEGRADED and new.status == TRUE:
            events.append(Event("Warning", new.reason, new.message))
        elif kind == Type.DEGRADED and old is not None and old.status == TRUE:
            events.append(Event("Normal", PoolReason.RECOVERED, "no longer degraded"))
        elif kind == Type.READY and new.status == TRUE:
            events.append(Event("Normal", PoolReason.WORKERS_READY, new.message))
    return events
