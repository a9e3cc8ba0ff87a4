"""Queue-depth autoscaling decisions: pure functions of what was read and what the pool looks like.

The HPA scales 1..N on the value the metrics API serves (`desired = ceil(value / targetDepthPerReplica)`);
the operator handles what an HPA cannot: waking a pool from zero, putting it back to zero after a
cooldown, holding fallback replicas while the queue cannot be read, and scaling for deadlines.

Deadline awareness: when the backend reports the age of the oldest waiting job and its JobType has a
deadline, the backlog must drain within the time left, `deadline - oldest_age`. With an observed
throughput of `rate` jobs per second per replica, that needs `ceil(depth / (rate * time_left))`
replicas. The served value is raised so the HPA asks for at least that many:
`value = max(depth, needed * targetDepthPerReplica)`. With no time left, or no throughput observed
yet, the deadline adds nothing (a formula cannot rescue a job that has already expired).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from workerfleet.api.conditions import (
    Condition,
    ConditionStatus,
    ConditionUpdate,
    find_condition,
    set_condition,
)
from workerfleet.api.workerpool import Autoscaling, WorkerPoolConditionType
from workerfleet.planners.status import Event, queue_refused_event


@dataclass(frozen=True)
class ScalingSettings:
    """The pool's autoscaling settings that matter for one decision."""

    min_replicas: int
    max_replicas: int
    target_depth_per_replica: int
    activation_depth: int
    cooldown_seconds: int
    failure_threshold: int | None = None
    fallback_replicas: int | None = None
    deadline_seconds: int | None = None


@dataclass(frozen=True)
class QueueState:
    """One poll's outcome and what the operator remembers between polls."""

    replicas: int
    depth: int | None
    """None when the read failed."""
    consecutive_failures: int
    oldest_age_seconds: float | None = None
    throughput_per_replica: float | None = None
    """Jobs per second one replica completes, when known."""
    idle_since: datetime | None = None
    """When depth last dropped to the activation depth or below; None while there is work."""


@dataclass(frozen=True)
class Pause:
    """Autoscaling paused by annotation: hold the current replicas, or set `replicas` and hold that."""

    replicas: int | None = None


PAUSED_ANNOTATION = "workerfleet.dev/autoscaling-paused"
PAUSED_REPLICAS_ANNOTATION = "workerfleet.dev/autoscaling-paused-replicas"


class PauseAnnotationError(ValueError):
    """A pause annotation that cannot be read; the message names it and the fix."""


def pause_from_annotations(annotations: dict[str, str]) -> Pause | None:
    """`autoscaling-paused: "true"` holds the replicas; `...-paused-replicas: "N"` sets N and holds it."""
    replicas_text = annotations.get(PAUSED_REPLICAS_ANNOTATION)
    if replicas_text is not None:
        if not replicas_text.isdigit():
            raise PauseAnnotationError(
                f"annotation {PAUSED_REPLICAS_ANNOTATION} must be a whole number of replicas,"
                f" not {replicas_text!r}"
            )
        return Pause(replicas=int(replicas_text))
    if annotations.get(PAUSED_ANNOTATION, "").lower() == "true":
        return Pause()
    return None


@dataclass(frozen=True)
class ScalingDecision:
    served_value: int | None
    """What the metrics API serves to the HPA; None serves nothing (the HPA keeps its replicas)."""
    replicas: int | None
    """A replica count the operator sets itself (activation, deactivation); None leaves it to the HPA."""
    idle_since: datetime | None
    in_fallback: bool


def deadline_replicas(
    depth: int,
    oldest_age_seconds: float | None,
    deadline_seconds: int | None,
    throughput_per_replica: float | None,
) -> int:
    """Replicas needed to drain `depth` jobs before the oldest one's deadline; 0 when unknown."""
    if oldest_age_seconds is None or deadline_seconds is None or not throughput_per_replica or depth <= 0:
        return 0
    time_left = deadline_seconds - oldest_age_seconds
    if time_left <= 0:
        return 0
    return math.ceil(depth / (throughput_per_replica * time_left))


def _within_bounds(replicas: int, policy: ScalingSettings) -> int:
    """A held count the HPA keeps: it scales anything outside min..max back at every sync, so holding
    such a count would fight it. Zero stays zero (the HPA does nothing at zero)."""
    if replicas == 0:
        return 0
    return min(max(replicas, policy.min_replicas, 1), policy.max_replicas)


def decide(
    policy: ScalingSettings, state: QueueState, now: datetime, pause: Pause | None = None
) -> ScalingDecision:
    """What to serve the HPA and whether the operator must set replicas itself, for one poll."""
    if pause is not None:
        # Serve exactly what holds the replica count, so the HPA neither adds nor removes workers.
        held = _within_bounds(state.replicas if pause.replicas is None else pause.replicas, policy)
        target = None if held == state.replicas else held
        return ScalingDecision(held * policy.target_depth_per_replica, target, None, in_fallback=False)
    return _decide_on_depth(policy, state, now)


def _decide_on_depth(policy: ScalingSettings, state: QueueState, now: datetime) -> ScalingDecision:
    if state.depth is None:
        fallback = policy.fallback_replicas
        threshold = policy.failure_threshold
        if fallback is not None and threshold is not None and state.consecutive_failures >= threshold:
            # From zero the HPA is inert, so the operator wakes the pool to the fallback count itself.
            wake = fallback if state.replicas == 0 and fallback > 0 else None
            return ScalingDecision(fallback * policy.target_depth_per_replica, wake, None, in_fallback=True)
        # Never scale on a value nobody read: serve nothing, keep replicas, keep the idle clock.
        return ScalingDecision(None, None, state.idle_since, in_fallback=False)

    depth = state.depth or 0
    needed = deadline_replicas(
        depth, state.oldest_age_seconds, policy.deadline_seconds, state.throughput_per_replica
    )
    served = max(depth, min(needed, policy.max_replicas) * policy.target_depth_per_replica)
    has_work = depth > policy.activation_depth
    idle_since = None if has_work else (state.idle_since or now)

    if policy.min_replicas > 0:
        # No scale to zero: bring a pool that sits at zero (e.g. after a manual scale) back to min.
        return ScalingDecision(
            served, policy.min_replicas if state.replicas == 0 else None, idle_since, False
        )
    if state.replicas == 0:
        return ScalingDecision(served, 1 if has_work else None, idle_since, False)
    cooled_down = idle_since is not None and now - idle_since >= timedelta(seconds=policy.cooldown_seconds)
    # Only from one replica: the HPA, under its own scale-down policy, brings the pool down to one.
    if cooled_down and state.replicas == 1:
        return ScalingDecision(served, 0, idle_since, False)
    return ScalingDecision(served, None, idle_since, False)


class ScalingReason:
    """Condition and Event reasons of autoscaling."""

    DEPTH_READ = "DepthRead"
    QUEUE_UNREACHABLE = "QueueUnreachable"
    CREDENTIALS_NOT_GRANTED = "CredentialsNotGranted"
    ADDRESS_NOT_ALLOWED = "AddressNotAllowed"
    SCALING_ON_DEPTH = "ScalingOnQueueDepth"
    PAUSED = "AutoscalingPaused"
    DEPTH_UNKNOWN = "DepthUnknown"
    FALLBACK_ACTIVE = "FallbackActive"
    FALLBACK_ENDED = "FallbackEnded"
    QUEUE_READABLE = "QueueReadable"
    ACTIVATED = "Activated"
    POLLING_FAILED = "PollingFailed"
    DEACTIVATED = "Deactivated"
    CIRCUIT_OPEN = "CircuitOpen"
    RATE_LIMITED = "RateLimited"


@dataclass(frozen=True)
class QueueConditions:
    """The three autoscaling conditions, judged for one poll: (status, reason, message) each."""

    queue_reachable: tuple[str, str, str]
    scaling_active: tuple[str, str, str]
    fallback: tuple[str, str, str]


def judge_queue(
    decision: ScalingDecision,
    depth: int | None,
    failures: int,
    error: str | None,
    replicas: int,
    *,
    paused: bool = False,
    refusal: tuple[str, str] | None = None,
    error_reason: str | None = None,
) -> QueueConditions:
    """`refusal`: (reason, message) when the queue was not even tried: an address or a Secret not allowed.
    `error_reason`: the failed read's own reason (an answer past one of the operator's bounds)."""
    if refusal is not None:
        reachable = ("False", *refusal)
    elif depth is None:
        reachable = (
            "False",
            error_reason or ScalingReason.QUEUE_UNREACHABLE,
            f"{failures} failed reads in a row: {error}",
        )
    else:
        reachable = ("True", ScalingReason.DEPTH_READ, f"{depth} jobs waiting")
    if paused:
        fallback = ("False", ScalingReason.QUEUE_READABLE, "")
        active = ("False", ScalingReason.PAUSED, f"paused by annotation; holding {replicas} replicas")
    elif decision.in_fallback:
        fallback = ("True", ScalingReason.FALLBACK_ACTIVE, f"queue unreadable; holding {replicas} replicas")
        active = (
            "False",
            ScalingReason.FALLBACK_ACTIVE,
            "scaling on the fallback replica count, not on depth",
        )
    else:
        fallback = ("False", ScalingReason.QUEUE_READABLE, "")
        active = (
            ("True", ScalingReason.SCALING_ON_DEPTH, f"serving depth {decision.served_value} to the HPA")
            if decision.served_value is not None
            else ("False", ScalingReason.DEPTH_UNKNOWN, "no depth to scale on; replicas held")
        )
    return QueueConditions(queue_reachable=reachable, scaling_active=active, fallback=fallback)


@dataclass(frozen=True)
class QueueStatusPlan:
    """What one poll writes to the pool's status, if anything, and the Events it posts."""

    patch: dict[str, Any] | None
    """status.queue and the conditions as a merge patch; None when the status already says it all."""
    events: list[Event]


def plan_queue_status(
    current: Mapping[str, Any],
    generation: int | None,
    queue: Mapping[str, Any],
    judged: QueueConditions,
    now: datetime,
) -> QueueStatusPlan:
    """status.queue and the autoscaling conditions after one poll, written only when they changed.

    Nothing here changes from one poll to the next while the queue stays as it is (no poll time, no
    age of the oldest job: those are metrics), so an idle fleet costs no writes at all.
    """
    previous = [Condition.model_validate(c) for c in current.get("conditions") or []]
    conditions = previous
    for condition_type, (status, reason, message) in (
        (WorkerPoolConditionType.QUEUE_REACHABLE, judged.queue_reachable),
        (WorkerPoolConditionType.SCALING_ACTIVE, judged.scaling_active),
        (WorkerPoolConditionType.FALLBACK, judged.fallback),
    ):
        update = ConditionUpdate(
            type=condition_type,
            status=ConditionStatus(status),
            reason=reason,
            message=message,
            observed_generation=generation,
        )
        conditions = set_condition(conditions, update, now.replace(microsecond=0))
    new_conditions = [c.to_dict() for c in conditions]
    # Only the fields a poll writes count: status.queue also holds the review and dead-letter depths,
    # which another reader keeps.
    stored = current.get("queue") or {}
    if new_conditions == [c.to_dict() for c in previous] and all(
        stored.get(k) == v for k, v in queue.items()
    ):
        return QueueStatusPlan(None, [])
    return QueueStatusPlan({"queue": dict(queue), "conditions": new_conditions}, _flips(previous, conditions))


def _flips(before: list[Condition], after: list[Condition]) -> list[Event]:
    """Events for the conditions a user acts on: the queue became unreachable, fallback began or ended."""
    refused = queue_refused_event(before, after)
    events = [] if refused is None else [refused]
    old_fallback = find_condition(before, WorkerPoolConditionType.FALLBACK)
    new_fallback = find_condition(after, WorkerPoolConditionType.FALLBACK)
    if new_fallback is not None and old_fallback is not None and new_fallback.status != old_fallback.status:
        if new_fallback.status == "True":
            events.append(Event("Warning", ScalingReason.FALLBACK_ACTIVE, new_fallback.message))
        else:
            events.append(
                Event("Normal", ScalingReason.FALLBACK_ENDED, "queue readable again; scaling on depth")
            )
    elif new_fallback is not None and old_fallback is None and new_fallback.status == "True":
        events.append(Event("Warning", ScalingReason.FALLBACK_ACTIVE, new_fallback.message))
    return events


def plan_polling_failure(
    current: Mapping[str, Any], generation: int | None, message: str, now: datetime
) -> dict[str, Any] | None:
    """The status patch that says a pool's poller fails and is retrying (ScalingActive=False), or None
    when the status says so already. The next successful poll sets the condition back."""
    previous = [Condition.model_validate(c) for c in current.get("conditions") or []]
    update = ConditionUpdate(
        type=WorkerPoolConditionType.SCALING_ACTIVE,
        status=ConditionStatus.FALSE,
        reason=ScalingReason.POLLING_FAILED,
        message=message,
        observed_generation=generation,
    )
    conditions = set_condition(previous, update, now.replace(microsecond=0))
    new_conditions = [c.to_dict() for c in conditions]
    if new_conditions == [c.to_dict() for c in previous]:
        return None
    return {"conditions": new_conditions}


THROUGHPUT_SMOOTHING = 0.3
"""Weight of the newest throughput estimate in its moving average."""


@dataclass(frozen=True)
class ScalingMemory:
    """What one pool's decisions carry from one poll to the next."""

    failures: int = 0
    """Failed reads in a row."""
    idle_since: datetime | None = None
    last_depth: int | None = None
    last_time: datetime | None = None
    throughput_per_replica: float | None = None
    """Jobs per second one replica completes, estimated from how fast the queue drains."""


def observe_drain(memory: ScalingMemory, depth: int, replicas: int, now: datetime) -> ScalingMemory:
    """Estimate jobs/s per replica from depth going down (arrivals make this an underestimate,
    which errs towards more replicas for deadlines)."""
    rate = memory.throughput_per_replica
    if memory.last_depth is not None and memory.last_time is not None and replicas > 0:
        seconds = (now - memory.last_time).total_seconds()
        drained = memory.last_depth - depth
        if seconds > 0 and drained > 0:
            newest = drained / seconds / replicas
            rate = (
                newest if rate is None else THROUGHPUT_SMOOTHING * newest + (1 - THROUGHPUT_SMOOTHING) * rate
            )
    return replace(memory, last_depth=depth, last_time=now, throughput_per_replica=rate)


def policy_of(scaling: Autoscaling, deadline_seconds: int | None) -> ScalingSettings:
    fallback = scaling.fallback
    return ScalingSettings(
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        target_depth_per_replica=scaling.target_depth_per_replica,
        activation_depth=scaling.activation_depth,
        cooldown_seconds=scaling.cooldown_seconds,
        failure_threshold=fallback.failure_threshold if fallback else None,
        fallback_replicas=fallback.replicas if fallback else None,
        deadline_seconds=deadline_seconds,
    )


@dataclass(frozen=True)
class RateCap:
    """A pool whose every JobType is rate limited: more replicas than the rates keep busy add nothing."""

    jobs_per_second: float
    """The sum of the JobTypes' rateLimit.jobsPerSecond."""
    per_replica: float
    """Jobs per second one worker runs at most (its concurrency over its handlers' mean time)."""

    def replicas(self) -> int:
        return max(math.ceil(self.jobs_per_second / self.per_replica - 1e-9), 1)


def pool_rate_cap(rate_limits: Sequence[float | None], per_replica: float | None) -> RateCap | None:
    """None unless every JobType has a rate limit and a worker's throughput has been measured."""
    if not rate_limits or per_replica is None or per_replica <= 0:
        return None
    if any(limit is None for limit in rate_limits):
        return None
    return RateCap(sum(limit for limit in rate_limits if limit is not None), per_replica)


@dataclass(frozen=True)
class PollFacts:
    """What one poll gathered: the pool as watched, the queue's answer (or why there is none)."""

    scaling: Autoscaling
    replicas: int
    annotations: Mapping[str, str]
    depth: int | None
    """None when the queue was not read."""
    oldest_age_seconds: float | None
    error: str | None
    """Why the read failed, or why there was nothing to read."""
    error_reason: str | None
    """The failed read's condition reason, when not QueueUnreachable (a bound of the operator's)."""
    refusal: tuple[str, str] | None
    """(reason, message) when the queue may not be contacted at all."""
    deadline_seconds: int | None
    """The strictest deadline of the pool's JobTypes."""
    now: datetime
    circuit_open: bool = False
    """The pool's circuit breaker is open or probing: its workers take few or no jobs, so the growing
    backlog says nothing about the replicas needed; they are held."""
    rate_cap: RateCap | None = None
    """The rate limits of the pool's JobTypes and what one worker can run, when every JobType has one."""


@dataclass(frozen=True)
class PollPlan:
    """Everything one poll does: what to serve the HPA, replicas to set, what status.queue says."""

    served_value: int | None
    """None: serve nothing, so the HPA holds its replicas."""
    scale_to: int | None
    """Replicas the operator sets itself, with `scale_event`; None leaves them to the HPA."""
    scale_event: Event | None
    queue_status: dict[str, Any]
    conditions: QueueConditions
    memory: ScalingMemory


def plan_poll(facts: PollFacts, memory: ScalingMemory) -> PollPlan:
    """Decide one poll of an autoscaled pool."""
    read = facts.depth is not None
    memory = replace(memory, failures=0 if read else memory.failures + 1)
    if facts.depth is not None:
        memory = observe_drain(memory, facts.depth, facts.replicas, facts.now)
    try:
        pause = pause_from_annotations(dict(facts.annotations))
        pause_problem = None
    except PauseAnnotationError as problem:
        pause, pause_problem = Pause(), str(problem)  # hold still rather than guess
    held_by_breaker = facts.circuit_open and pause is None
    if held_by_breaker:
        pause = Pause()
    state = QueueState(
        replicas=facts.replicas,
        depth=facts.depth,
        consecutive_failures=memory.failures,
        oldest_age_seconds=facts.oldest_age_seconds,
        throughput_per_replica=memory.throughput_per_replica,
        idle_since=memory.idle_since,
    )
    decision = decide(policy_of(facts.scaling, facts.deadline_seconds), state, facts.now, pause)
    memory = replace(memory, idle_since=decision.idle_since)
    scale_to = decision.replicas if decision.replicas != facts.replicas else None
    queue_status: dict[str, Any] = {"consecutiveFailures": memory.failures}
    if facts.depth is not None:
        queue_status["depth"] = facts.depth
    judged = judge_queue(
        decision,
        facts.depth,
        memory.failures,
        facts.error,
        decision.replicas or facts.replicas,
        paused=pause is not None,
        refusal=facts.refusal,
        error_reason=facts.error_reason,
    )
    if pause_problem is not None:
        judged = replace(
            judged, scaling_active=(judged.scaling_active[0], ScalingReason.PAUSED, pause_problem)
        )
    if held_by_breaker:
        message = f"circuit breaker open; holding {facts.replicas} replicas"
        judged = replace(judged, scaling_active=("False", ScalingReason.CIRCUIT_OPEN, message))
    served = decision.served_value
    cap = facts.rate_cap
    if pause is None and cap is not None and served is not None:
        ceiling = cap.replicas() * facts.scaling.target_depth_per_replica
        if served > ceiling:
            served = ceiling
            message = (
                f"the JobTypes' rate limit of {cap.jobs_per_second:g} jobs/s keeps {cap.replicas()} replicas"
                f" busy ({cap.per_replica:.1f} jobs/s each); serving {served} to the HPA"
            )
            judged = replace(judged, scaling_active=("True", ScalingReason.RATE_LIMITED, message))
    return PollPlan(
        served_value=served,
        scale_to=scale_to,
        scale_event=None if scale_to is None else _scale_event(facts, scale_to, paused=pause is not None),
        queue_status=queue_status,
        conditions=judged,
        memory=memory,
    )


def _scale_event(facts: PollFacts, replicas: int, *, paused: bool) -> Event:
    before = facts.replicas
    if paused:
        return Event(
            "Normal",
            ScalingReason.PAUSED,
            f"autoscaling paused by annotation: scaled {before} -> {replicas} and held there",
        )
    if replicas > before and facts.depth is None:
        return Event(
            "Normal",
            ScalingReason.ACTIVATED,
            f"queue unreadable ({facts.error}): scaled {before} -> {replicas}, the fallback replicas",
        )
    if replicas > before:
        return Event(
            "Normal",
            ScalingReason.ACTIVATED,
            f"queue depth {facts.depth} is above the activation depth: scaled {before} -> {replicas}",
        )
    return Event(
        "Normal",
        ScalingReason.DEACTIVATED,
        f"queue idle for the cooldown: scaled from {before} to {replicas}",
    )
