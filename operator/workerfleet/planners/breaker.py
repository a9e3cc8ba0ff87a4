"""A pool's circuit breaker and its workers' deletion costs, decided from plain values.

The operator scrapes every ready worker's outcome counters (`workerfleet_jobs_total`, the series the
canary analysis counts) and in-flight gauge; these functions turn the scrapes into a failure ratio over
a window, the breaker's next state, and each pod's `controller.kubernetes.io/pod-deletion-cost`.

    Closed --(a ratio >= its maxFailureRatio over the window, >= its minSamples jobs)--> Open
    Open --(coolDownSeconds passed, not held)--> HalfOpen
    HalfOpen --(probeJobs outcomes in, every ratio < its maxFailureRatio)--> Closed
    HalfOpen --(probeJobs outcomes in, a ratio >= its maxFailureRatio)--> Open
    any --(action reset)--> Closed;  any --(action open)--> Open, held until reset

"A ratio": the failures of each failure class with thresholds of its own (spec's failureClasses, from
`workerfleet_job_failures_total`) over all jobs finished, and the failures of every other class and
of none, together, against the breaker's own maxFailureRatio and minSamples. A class that does not
trip counts in neither.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from workerfleet.api.jobtype import FailureClass
from workerfleet.api.worker_contract import UNCOUNTED_OUTCOMES, WorkerEnv
from workerfleet.api.workerpool import BreakerState, CircuitBreaker
from workerfleet.planners.status import Event

BREAKER_ACTION_ANNOTATION = "workerfleet.dev/breaker-action"
"""`reset/<token>` or `open/<token>`, set by `kubectl workerfleet breaker`; each token is acted on once."""
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
MIN_SCRAPE_SECONDS = 2.0
MAX_SCRAPE_SECONDS = 10.0
COST_SCRAPE_SECONDS = 5.0
"""How often the workers of a pool without a breaker are read for their deletion costs."""
HISTORY_MARGIN_SECONDS = 30.0


class BreakerReason:
    """Reasons of the CircuitOpen condition and the breaker's Events."""

    TRIPPED = "CircuitTripped"
    PROBING = "CircuitHalfOpen"
    CLOSED = "CircuitClosed"
    HELD_OPEN = "CircuitHeldOpen"
    RESET = "CircuitReset"
    ACTION_IGNORED = "BreakerActionIgnored"
    WORKERS_UNREADABLE = "WorkersUnreadable"


class BreakerAction:
    RESET = "reset"
    OPEN = "open"


@dataclass(frozen=True)
class WorkerCounters:
    """One scrape of one worker: its outcome counters (summed over job types), the jobs it holds, the
    time its handlers ran (the duration histogram's sum and count), and its failed attempts by
    (outcome, failure class)."""

    outcomes: Mapping[str, float]
    in_flight: float
    handler_seconds: float = 0.0
    handled: float = 0.0
    class_failures: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scrape:
    """All ready workers of a pool read at one time, by pod name."""

    time: datetime
    workers: Mapping[str, WorkerCounters]


_CLASSES = {failure_class.value: failure_class for failure_class in FailureClass}


@dataclass(frozen=True)
class Threshold:
    """One verdict of the breaker: the failures of one class with thresholds of its own, or (class
    None) those of every other class and of none, together."""

    failure_class: FailureClass | None
    max_failure_ratio: float
    min_samples: int


def thresholds(breaker: CircuitBreaker) -> list[Threshold]:
    """The breaker's verdicts: one per listed class that trips, then the rest together."""
    listed = [
        Threshold(
            entry.failure_class,
            entry.max_failure_ratio or breaker.max_failure_ratio,
            entry.min_samples or breaker.min_samples,
        )
        for entry in breaker.failure_classes
        if entry.trips
    ]
    return [*listed, Threshold(None, breaker.max_failure_ratio, breaker.min_samples)]


@dataclass(frozen=True)
class OutcomeCounts:
    """Jobs finished in a window, and the failures of each verdict (by failure class, None the rest)."""

    total: float
    by_class: Mapping[FailureClass | None, float] = field(default_factory=dict)

    @property
    def failures(self) -> float:
        return sum(self.by_class.values())

    @property
    def ratio(self) -> float | None:
        return self.failures / self.total if self.total > 0 else None

    def ratio_of(self, failure_class: FailureClass | None) -> float | None:
        return self.by_class.get(failure_class, 0.0) / self.total if self.total > 0 else None


def scrape_interval(breaker: CircuitBreaker | None) -> float:
    """A fifth of the window, so a window holds several scrapes, within 2-10 s."""
    if breaker is None:
        return COST_SCRAPE_SECONDS
    return min(max(breaker.window_seconds / 5, MIN_SCRAPE_SECONDS), MAX_SCRAPE_SECONDS)


def trim(history: Sequence[Scrape], now: datetime, keep_seconds: float) -> list[Scrape]:
    """The scrapes still needed: those within `keep_seconds`, plus the newest one before it (a window's
    start)."""
    cutoff = now - timedelta(seconds=keep_seconds)
    older = [scrape for scrape in history if scrape.time < cutoff]
    return [*older[-1:], *(scrape for scrape in history if scrape.time >= cutoff)]


def counts_since(
    history: Sequence[Scrape],
    since: datetime,
    failure_outcomes: Sequence[str],
    classes: Mapping[FailureClass, bool] | None = None,
) -> OutcomeCounts:
    """Jobs finished and failed between the last scrape at or before `since` and the newest scrape.

    Failures (outcomes in `failure_outcomes`) of a class in `classes` count under that class when it
    maps to True (it trips) and nowhere when False; all others count under None.
    Per pod: a pod first seen after the start counts from zero (the runtime creates its series at 0,
    or at its first failure of a class); a counter that went down (the container restarted) counts
    from zero too."""
    if not history:
        return OutcomeCounts(0)
    newest = history[-1]
    starts = [scrape for scrape in history if scrape.time <= since]
    start = starts[-1] if starts else history[0]
    if start is newest:
        return OutcomeCounts(0)
    classes = classes or {}
    total = failures = 0.0
    by_class: dict[FailureClass | None, float] = {}
    for pod, counters in newest.workers.items():
        before = start.workers.get(pod)
        for outcome, value in counters.outcomes.items():
            if outcome in UNCOUNTED_OUTCOMES:
                continue
            previous = before.outcomes.get(outcome, 0.0) if before is not None else 0.0
            increase = _increase(value, previous)
            total += increase
            if outcome in failure_outcomes:
                failures += increase
        for (outcome, name), value in counters.class_failures.items():
            failure_class = _CLASSES.get(name)
            if outcome not in failure_outcomes or failure_class is None or failure_class not in classes:
                continue
            previous = before.class_failures.get((outcome, name), 0.0) if before is not None else 0.0
            increase = _increase(value, previous)
            failures -= increase
            if classes[failure_class]:
                by_class[failure_class] = by_class.get(failure_class, 0.0) + increase
    # Never below zero: a worker whose class counter restarted within a scrape can lag its outcomes'.
    by_class[None] = max(failures, 0.0)
    return OutcomeCounts(total, by_class)


def _breaker_counts(breaker: CircuitBreaker, history: Sequence[Scrape], since: datetime) -> OutcomeCounts:
    classes = {entry.failure_class: entry.trips for entry in breaker.failure_classes}
    return counts_since(history, since, breaker.failure_outcomes, classes)


def _increase(now: float, before: float) -> float:
    """A counter's increase; one that went down restarted from zero."""
    return now - before if now >= before else now


def handler_rate_per_worker(history: Sequence[Scrape], since: datetime, concurrency: int) -> float | None:
    """Jobs per second one worker can run, from the mean time its handlers took since `since`:
    `concurrency / mean`. None before any handler finished in that time."""
    if len(history) < 2:
        return None
    newest = history[-1]
    starts = [scrape for scrape in history if scrape.time <= since]
    start = starts[-1] if starts else history[0]
    seconds = handled = 0.0
    for pod, counters in newest.workers.items():
        before = start.workers.get(pod)
        seconds += _increase(counters.handler_seconds, before.handler_seconds if before else 0.0)
        handled += _increase(counters.handled, before.handled if before else 0.0)
    if handled <= 0 or seconds <= 0:
        return None
    return concurrency / (seconds / handled)


@dataclass(frozen=True)
class BreakerStatus:
    """status.circuitBreaker as plain values."""

    state: BreakerState = BreakerState.CLOSED
    since: datetime | None = None
    held: bool = False
    failure_ratio: float | None = None
    samples: int = 0
    handled_action: str | None = None
    failure_class: FailureClass | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> BreakerStatus:
        if not status:
            return cls()
        since = status.get("since")
        return cls(
            state=BreakerState(status.get("state", BreakerState.CLOSED)),
            since=datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None,
            held=bool(status.get("held", False)),
            failure_ratio=status.get("failureRatio"),
            samples=int(status.get("samples", 0)),
            handled_action=status.get("handledAction"),
            failure_class=_CLASSES.get(status.get("failureClass") or ""),
        )

    def to_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": self.state.value, "held": self.held, "samples": self.samples}
        body["since"] = self.since.strftime("%Y-%m-%dT%H:%M:%SZ") if self.since else None
        body["failureRatio"] = None if self.failure_ratio is None else round(self.failure_ratio, 4)
        body["handledAction"] = self.handled_action
        body["failureClass"] = self.failure_class.value if self.failure_class else None
        return body


@dataclass(frozen=True)
class BreakerDecision:
    status: BreakerStatus
    events: list[Event]


def parse_action(value: str | None) -> str | None:
    """The verb of a breaker action annotation, or None when it names no known one."""
    if not value:
        return None
    verb = value.split("/", 1)[0]
    return verb if verb in (BreakerAction.RESET, BreakerAction.OPEN) else None


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _which(breaker: CircuitBreaker | None, failure_class: FailureClass | None) -> str:
    """How a message names the failures it counts: those of one class, or (None) the rest."""
    if failure_class is not None:
        return f"{failure_class.value} failures: "
    return "failures of other classes: " if breaker is not None and breaker.failure_classes else ""


def _worst(counts: OutcomeCounts, verdicts: Sequence[Threshold], min_samples: bool) -> Threshold:
    """The verdict nearest its maximum (first a verdict that reached it with enough samples, when
    `min_samples`): the one the status and the messages name."""

    def rank(verdict: Threshold) -> tuple[bool, float, bool]:
        ratio = counts.ratio_of(verdict.failure_class) or 0.0
        reached = ratio >= verdict.max_failure_ratio and (
            not min_samples or counts.total >= verdict.min_samples
        )
        return (reached, ratio / verdict.max_failure_ratio, verdict.failure_class is None)

    return max(verdicts, key=rank)


def _reached(counts: OutcomeCounts, verdict: Threshold) -> bool:
    ratio = counts.ratio_of(verdict.failure_class)
    return ratio is not None and ratio >= verdict.max_failure_ratio


def _limit(breaker: CircuitBreaker, failure_class: FailureClass | None) -> float:
    return next(
        (v.max_failure_ratio for v in thresholds(breaker) if v.failure_class == failure_class),
        breaker.max_failure_ratio,
    )


def decide_breaker(
    breaker: CircuitBreaker,
    current: BreakerStatus,
    history: Sequence[Scrape],
    now: datetime,
    action: str | None = None,
) -> BreakerDecision:
    """The breaker's next state from the scrapes so far, and the Events of its transitions."""
    if action is not None and action != current.handled_action:
        return _on_action(current, action, now)
    current = replace(current, since=current.since or now)
    if current.state == BreakerState.CLOSED:
        return _when_closed(breaker, current, history, now)
    if current.state == BreakerState.OPEN:
        return _when_open(breaker, current, now)
    return _when_half_open(breaker, current, history, now)


def _on_action(current: BreakerStatus, action: str, now: datetime) -> BreakerDecision:
    verb = parse_action(action)
    handled = replace(current, handled_action=action)
    if verb == BreakerAction.RESET:
        status = replace(handled, state=BreakerState.CLOSED, since=now, held=False)
        return BreakerDecision(status, [Event("Normal", BreakerReason.RESET, "breaker reset by request")])
    if verb == BreakerAction.OPEN:
        status = replace(handled, state=BreakerState.OPEN, since=now, held=True)
        message = "breaker opened by request; held until reset"
        return BreakerDecision(status, [Event("Warning", BreakerReason.HELD_OPEN, message)])
    message = f"breaker action {action!r} ignored: use reset/<token> or open/<token>"
    return BreakerDecision(handled, [Event("Warning", BreakerReason.ACTION_IGNORED, message)])


def _when_closed(
    breaker: CircuitBreaker, current: BreakerStatus, history: Sequence[Scrape], now: datetime
) -> BreakerDecision:
    start = now - timedelta(seconds=breaker.window_seconds)
    window = _breaker_counts(breaker, history, start)
    verdict = _worst(window, thresholds(breaker), min_samples=True)
    ratio = window.ratio_of(verdict.failure_class)
    status = replace(
        current, failure_ratio=ratio, samples=int(window.total), failure_class=verdict.failure_class
    )
    if window.total < verdict.min_samples or not _reached(window, verdict):
        return BreakerDecision(status, [])
    measured = f"{_which(breaker, verdict.failure_class)}{_percent(ratio)} of {int(window.total)} jobs"
    message = (
        f"{measured} failed in the last {breaker.window_seconds}s (maxFailureRatio"
        f" {_percent(verdict.max_failure_ratio)}): workers take no new jobs for {breaker.cool_down_seconds}s"
    )
    opened = replace(status, state=BreakerState.OPEN, since=now)
    return BreakerDecision(opened, [Event("Warning", BreakerReason.TRIPPED, message)])


def _when_open(breaker: CircuitBreaker, current: BreakerStatus, now: datetime) -> BreakerDecision:
    since = current.since or now
    if current.held or now - since < timedelta(seconds=breaker.cool_down_seconds):
        return BreakerDecision(current, [])
    message = f"cool-down over: each worker takes up to {breaker.probe_jobs} probe jobs"
    probing = replace(
        current, state=BreakerState.HALF_OPEN, since=now, samples=0, failure_ratio=None, failure_class=None
    )
    return BreakerDecision(probing, [Event("Normal", BreakerReason.PROBING, message)])


def _when_half_open(
    breaker: CircuitBreaker, current: BreakerStatus, history: Sequence[Scrape], now: datetime
) -> BreakerDecision:
    probe = _breaker_counts(breaker, history, current.since or now)
    verdict = _worst(probe, thresholds(breaker), min_samples=False)
    ratio = probe.ratio_of(verdict.failure_class)
    status = replace(
        current, failure_ratio=ratio, samples=int(probe.total), failure_class=verdict.failure_class
    )
    if probe.total < breaker.probe_jobs or ratio is None:
        return BreakerDecision(status, [])
    measured = f"{_which(breaker, verdict.failure_class)}{_percent(ratio)} of {int(probe.total)} jobs failed"
    if _reached(probe, verdict):
        message = f"probe failed: {measured}; open again for {breaker.cool_down_seconds}s"
        reopened = replace(status, state=BreakerState.OPEN, since=now)
        return BreakerDecision(reopened, [Event("Warning", BreakerReason.TRIPPED, message)])
    message = f"probe passed: {measured}; jobs flow again"
    closed = replace(status, state=BreakerState.CLOSED, since=now)
    return BreakerDecision(closed, [Event("Normal", BreakerReason.CLOSED, message)])


def unreadable_workers(ready: int, answered: int, port: int) -> str | None:
    """Why the breaker cannot judge: ready workers exist but none answered at its metrics port."""
    if ready == 0 or answered > 0:
        return None
    return (
        f"none of the {ready} ready workers answered at podIP:{port}/metrics, so the breaker cannot"
        " judge: let the operator reach that port (NetworkPolicy), or check spec.worker.port"
    )


def circuit_open_condition(
    breaker: CircuitBreaker | None, status: BreakerStatus, unreadable: str | None = None
) -> tuple[str, str, str]:
    """CircuitOpen as (status, reason, message): True while workers are held back, open or probing."""
    if breaker is not None and status.state == BreakerState.CLOSED and unreadable is not None:
        return ("False", BreakerReason.WORKERS_UNREADABLE, unreadable)
    which = _which(breaker, status.failure_class)
    if breaker is None or status.state == BreakerState.CLOSED:
        if status.failure_ratio is None:
            return ("False", BreakerReason.CLOSED, f"jobs flow over {status.samples} jobs")
        measured = f"{which}{_percent(status.failure_ratio)} of {status.samples} jobs failed"
        return ("False", BreakerReason.CLOSED, f"jobs flow; {measured}")
    measured = f"{which}{_percent(status.failure_ratio)} of {status.samples} jobs failed"
    if status.state == BreakerState.HALF_OPEN:
        return ("True", BreakerReason.PROBING, f"probing: {measured} so far")
    if status.held:
        return (
            "True",
            BreakerReason.HELD_OPEN,
            "opened by request; `kubectl workerfleet breaker reset` closes it",
        )
    limit = _percent(_limit(breaker, status.failure_class))
    return ("True", BreakerReason.TRIPPED, f"{measured} (maxFailureRatio {limit})")


def breaker_document(breaker: CircuitBreaker | None, status: BreakerStatus) -> str:
    """What workers read from breaker.json: the state, when it began (a new probe per half-open) and the
    probe size. Byte-for-byte stable, so an unchanged state writes nothing."""
    if breaker is None:
        return json.dumps({"state": BreakerState.CLOSED.value}, sort_keys=True)
    since = status.since.strftime("%Y-%m-%dT%H:%M:%SZ") if status.since else ""
    return json.dumps(
        {"state": status.state.value, "since": since, "probeJobs": breaker.probe_jobs}, sort_keys=True
    )


def worker_concurrency(template: Mapping[str, Any]) -> int:
    """WORKERFLEET_CONCURRENCY of the first container, as the runtime reads it (default 1)."""
    containers = (template.get("spec") or {}).get("containers") or [{}]
    for variable in containers[0].get("env") or []:
        if variable.get("name") == WorkerEnv.CONCURRENCY:
            value = str(variable.get("value", ""))
            return int(value) if value.isdigit() and int(value) > 0 else 1
    return 1


def deletion_costs(workers: Mapping[str, WorkerCounters]) -> dict[str, str]:
    """Each pod's pod-deletion-cost: the jobs it holds, so the ReplicaSet removes idle workers first."""
    return {pod: str(round(counters.in_flight)) for pod, counters in workers.items()}


def cost_patches(wanted: Mapping[str, str], current: Mapping[str, str | None]) -> dict[str, str]:
    """The pods whose annotation differs from the cost wanted: only those are patched."""
    return {pod: cost for pod, cost in wanted.items() if pod in current and current[pod] != cost}
