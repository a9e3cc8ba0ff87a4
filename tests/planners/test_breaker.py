"""The circuit breaker's transitions, the failure ratio over a window of scrapes, and deletion costs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workerfleet.api.jobtype import FailureClass
from workerfleet.api.workerpool import BreakerState, CircuitBreaker
from workerfleet.planners.breaker import (
    BreakerReason,
    BreakerStatus,
    Scrape,
    WorkerCounters,
    breaker_document,
    circuit_open_condition,
    cost_patches,
    counts_since,
    decide_breaker,
    deletion_costs,
    scrape_interval,
    trim,
    unreadable_workers,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
BREAKER = CircuitBreaker.model_validate(
    {"maxFailureRatio": 0.5, "minSamples": 10, "windowSeconds": 30, "coolDownSeconds": 20, "probeJobs": 4}
)
FAILURES = ["retried", "dead_lettered", "failed"]


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def worker(succeeded: float = 0, retried: float = 0, in_flight: float = 0, **others: float) -> WorkerCounters:
    return WorkerCounters({"succeeded": succeeded, "retried": retried, **others}, in_flight)


def scrapes(*points: tuple[float, dict[str, WorkerCounters]]) -> list[Scrape]:
    return [Scrape(at(seconds), workers) for seconds, workers in points]


def test_counts_are_the_increase_over_the_window_summed_over_pods() -> None:
    history = scrapes(
        (0, {"a": worker(succeeded=100, retried=5), "b": worker(succeeded=50)}),
        (10, {"a": worker(succeeded=110, retried=15), "b": worker(succeeded=50, retried=10)}),
    )
    counts = counts_since(history, at(0), FAILURES)
    assert (counts.total, counts.failures) == (30, 20)


def test_a_new_pod_counts_from_zero_and_a_restarted_one_from_its_reset() -> None:
    history = scrapes(
        (0, {"a": worker(succeeded=100)}),
        (10, {"a": worker(succeeded=3, retried=2), "new": worker(succeeded=4, retried=1)}),
    )
    counts = counts_since(history, at(0), FAILURES)
    assert (counts.total, counts.failures) == (10, 3)


def test_duplicates_are_no_sample_and_only_the_chosen_outcomes_are_failures() -> None:
    history = scrapes((0, {"a": worker()}), (10, {"a": worker(succeeded=5, duplicate=50, expired=5)}))
    assert counts_since(history, at(0), FAILURES).total == 10
    assert counts_since(history, at(0), FAILURES).failures == 0
    assert counts_since(history, at(0), ["expired"]).failures == 5


def test_one_scrape_is_no_window_yet() -> None:
    counts = counts_since(scrapes((0, {"a": worker(succeeded=100, retried=100)})), at(-30), FAILURES)
    assert counts.total == 0
    assert counts.ratio is None


def test_trim_keeps_the_newest_scrape_before_the_window_as_its_start() -> None:
    history = scrapes((0, {}), (10, {}), (20, {}), (50, {}))
    assert [scrape.time for scrape in trim(history, at(50), 35)] == [at(10), at(20), at(50)]


HEALTHY = scrapes((0, {"a": worker(succeeded=0)}), (10, {"a": worker(succeeded=18, retried=2)}))
FAILING = scrapes((0, {"a": worker(succeeded=0)}), (10, {"a": worker(succeeded=4, retried=16)}))
TOO_FEW = scrapes((0, {"a": worker(succeeded=0)}), (10, {"a": worker(succeeded=1, retried=8)}))


@pytest.mark.parametrize(
    ("current", "history", "now", "state", "reasons"),
    [
        pytest.param(
            BreakerStatus(since=at(0)), HEALTHY, at(10), BreakerState.CLOSED, [], id="closed-healthy"
        ),
        pytest.param(
            BreakerStatus(since=at(0)),
            FAILING,
            at(10),
            BreakerState.OPEN,
            [BreakerReason.TRIPPED],
            id="trips",
        ),
        pytest.param(
            BreakerStatus(since=at(0)), TOO_FEW, at(10), BreakerState.CLOSED, [], id="below-min-samples"
        ),
        pytest.param(
            BreakerStatus(BreakerState.OPEN, since=at(10)),
            FAILING,
            at(25),
            BreakerState.OPEN,
            [],
            id="cooling",
        ),
        pytest.param(
            BreakerStatus(BreakerState.OPEN, since=at(10)),
            FAILING,
            at(30),
            BreakerState.HALF_OPEN,
            [BreakerReason.PROBING],
            id="cool-down-over",
        ),
        pytest.param(
            BreakerStatus(BreakerState.OPEN, since=at(10), held=True),
            FAILING,
            at(300),
            BreakerState.OPEN,
            [],
            id="held-open-never-probes",
        ),
        pytest.param(
            BreakerStatus(BreakerState.HALF_OPEN, since=at(0)),
            scrapes((0, {"a": worker()}), (5, {"a": worker(succeeded=2, retried=1)})),
            at(5),
            BreakerState.HALF_OPEN,
            [],
            id="probe-not-complete",
        ),
        pytest.param(
            BreakerStatus(BreakerState.HALF_OPEN, since=at(0)),
            scrapes((0, {"a": worker()}), (5, {"a": worker(succeeded=4, retried=1)})),
            at(5),
            BreakerState.CLOSED,
            [BreakerReason.CLOSED],
            id="probe-passes",
        ),
        pytest.param(
            BreakerStatus(BreakerState.HALF_OPEN, since=at(0)),
            scrapes((0, {"a": worker()}), (5, {"a": worker(succeeded=1, retried=3)})),
            at(5),
            BreakerState.OPEN,
            [BreakerReason.TRIPPED],
            id="probe-fails",
        ),
    ],
)
def test_transitions(
    current: BreakerStatus, history: list[Scrape], now: datetime, state: BreakerState, reasons: list[str]
) -> None:
    decision = decide_breaker(BREAKER, current, history, now)
    assert decision.status.state == state
    assert [event.reason for event in decision.events] == reasons
    if state != current.state:
        assert decision.status.since == now, "a new state starts its clock"


def test_tripping_says_the_measured_ratio() -> None:
    decision = decide_breaker(BREAKER, BreakerStatus(since=at(0)), FAILING, at(10))
    assert decision.status.failure_ratio == pytest.approx(0.8)
    assert decision.status.samples == 20
    assert decision.events[0].type == "Warning"
    assert "80.0% of 20 jobs failed in the last 30s" in decision.events[0].message
    status, reason, message = circuit_open_condition(BREAKER, decision.status)
    assert (status, reason) == ("True", BreakerReason.TRIPPED)
    assert "80.0% of 20 jobs failed" in message


@pytest.mark.parametrize(
    ("state", "action", "expected", "held"),
    [
        (BreakerState.OPEN, "reset/1", BreakerState.CLOSED, False),
        (BreakerState.HALF_OPEN, "reset/1", BreakerState.CLOSED, False),
        (BreakerState.CLOSED, "open/1", BreakerState.OPEN, True),
    ],
)
def test_actions_act_once(state: BreakerState, action: str, expected: BreakerState, held: bool) -> None:
    decision = decide_breaker(BREAKER, BreakerStatus(state, since=at(0)), HEALTHY, at(10), action)
    assert (decision.status.state, decision.status.held) == (expected, held)
    assert decision.status.handled_action == action
    again = decide_breaker(BREAKER, decision.status, FAILING, at(11), action)
    assert again.status.handled_action == action
    assert not [
        event for event in again.events if event.reason in (BreakerReason.RESET, BreakerReason.HELD_OPEN)
    ]


def test_an_unknown_action_is_dropped_with_a_warning() -> None:
    decision = decide_breaker(BREAKER, BreakerStatus(since=at(0)), HEALTHY, at(10), "close-it/1")
    assert decision.status.state == BreakerState.CLOSED
    assert [(event.type, event.reason) for event in decision.events] == [
        ("Warning", BreakerReason.ACTION_IGNORED)
    ]
    assert "reset/<token>" in decision.events[0].message


def test_status_round_trips() -> None:
    status = BreakerStatus(BreakerState.HALF_OPEN, at(7), False, 0.25, 8, "reset/x", FailureClass.TIMEOUT)
    assert BreakerStatus.from_status(json.loads(json.dumps(status.to_status()))) == status


def test_the_workers_document_changes_only_with_the_state() -> None:
    open_status = BreakerStatus(BreakerState.OPEN, since=at(0), failure_ratio=0.9, samples=10)
    document: dict[str, Any] = json.loads(breaker_document(BREAKER, open_status))
    assert document == {"state": "Open", "since": "2026-01-01T00:00:00Z", "probeJobs": 4}
    more_samples = BreakerStatus(BreakerState.OPEN, since=at(0), failure_ratio=0.8, samples=30)
    assert breaker_document(BREAKER, open_status) == breaker_document(BREAKER, more_samples)
    assert json.loads(breaker_document(None, open_status)) == {"state": "Closed"}


def test_scrape_interval_is_a_fifth_of_the_window_within_bounds() -> None:
    assert scrape_interval(BREAKER) == 6
    assert scrape_interval(BREAKER.model_copy(update={"window_seconds": 10})) == 2
    assert scrape_interval(BREAKER.model_copy(update={"window_seconds": 600})) == 10


def test_deletion_costs_are_the_jobs_held_and_only_changes_are_written() -> None:
    costs = deletion_costs({"busy": worker(in_flight=3), "idle": worker()})
    assert costs == {"busy": "3", "idle": "0"}
    assert cost_patches(costs, {"busy": "1", "idle": "0", "other": None}) == {"busy": "3"}
    assert cost_patches(costs, {"busy": None}) == {"busy": "3"}, "a pod gone since the scrape is left out"


def test_a_breaker_that_reads_no_worker_says_so() -> None:
    problem = unreadable_workers(ready=3, answered=0, port=8000)
    assert problem is not None
    assert "none of the 3 ready workers answered at podIP:8000/metrics" in problem
    status, reason, _ = circuit_open_condition(BREAKER, BreakerStatus(), problem)
    assert (status, reason) == ("False", BreakerReason.WORKERS_UNREADABLE)
    assert unreadable_workers(ready=3, answered=1, port=8000) is None
    assert unreadable_workers(ready=0, answered=0, port=8000) is None, "no ready worker: nothing to read"


BY_CLASS = CircuitBreaker.model_validate(
    {
        "maxFailureRatio": 0.5,
        "minSamples": 10,
        "windowSeconds": 30,
        "coolDownSeconds": 20,
        "probeJobs": 4,
        "failureClasses": [
            {"class": "transient", "maxFailureRatio": 0.2, "minSamples": 5},
            {"class": "validation", "trips": False},
        ],
    }
)


def failing(succeeded: float, **by_class: float) -> WorkerCounters:
    """A worker whose failed attempts were all retried, `by_class` of them with those classes."""
    retried = sum(by_class.values())
    return WorkerCounters(
        {"succeeded": succeeded, "retried": retried},
        0,
        class_failures={("retried", name): value for name, value in by_class.items()},
    )


def window(**by_class: float) -> list[Scrape]:
    """20 jobs over a window from zero: the failures given, the rest succeeded."""
    return scrapes((0, {"a": failing(0)}), (10, {"a": failing(20 - sum(by_class.values()), **by_class)}))


@pytest.mark.parametrize(
    ("history", "state", "failure_class", "ratio"),
    [
        pytest.param(
            window(transient=3), BreakerState.CLOSED, "transient", 0.15, id="transient-below-its-own"
        ),
        pytest.param(window(transient=4), BreakerState.OPEN, "transient", 0.2, id="transient-at-its-own"),
        pytest.param(window(validation=20), BreakerState.CLOSED, None, 0.0, id="a-class-that-never-trips"),
        pytest.param(window(timeout=9), BreakerState.CLOSED, None, 0.45, id="others-below-the-default"),
        pytest.param(window(timeout=6, unknown=4), BreakerState.OPEN, None, 0.5, id="others-pooled-trip"),
        pytest.param(
            window(validation=9, timeout=3, transient=3),
            BreakerState.CLOSED,
            "transient",
            0.15,
            id="classes-judged-apart",
        ),
    ],
)
def test_each_listed_class_is_judged_on_its_own_and_the_rest_together(
    history: list[Scrape], state: BreakerState, failure_class: str | None, ratio: float
) -> None:
    decision = decide_breaker(BY_CLASS, BreakerStatus(since=at(0)), history, at(10))
    assert decision.status.state == state
    assert decision.status.failure_class == failure_class
    assert decision.status.failure_ratio == pytest.approx(ratio)


def test_failures_without_a_class_count_with_the_rest() -> None:
    # 6 failures by outcome, none of them in the class counter (a PermanentError, a crash loop)
    history = scrapes((0, {"a": worker()}), (10, {"a": worker(succeeded=14, dead_lettered=6)}))
    counts = counts_since(history, at(0), FAILURES, {"transient": True})  # type: ignore[dict-item]
    assert counts.by_class == {None: 6}


def test_a_class_below_its_own_min_samples_gives_no_verdict() -> None:
    breaker = BY_CLASS.model_copy(update={"min_samples": 100})
    few = scrapes((0, {"a": failing(0)}), (10, {"a": failing(2, transient=2)}))
    assert (
        decide_breaker(breaker, BreakerStatus(since=at(0)), few, at(10)).status.state == BreakerState.CLOSED
    )
    enough = scrapes((0, {"a": failing(0)}), (10, {"a": failing(3, transient=2)}))
    assert (
        decide_breaker(breaker, BreakerStatus(since=at(0)), enough, at(10)).status.state == BreakerState.OPEN
    )


def test_the_class_that_tripped_is_named_in_the_event_and_the_condition() -> None:
    decision = decide_breaker(BY_CLASS, BreakerStatus(since=at(0)), window(transient=8), at(10))
    [event] = decision.events
    assert (event.type, event.reason) == ("Warning", BreakerReason.TRIPPED)
    assert (
        "transient failures: 40.0% of 20 jobs failed in the last 30s (maxFailureRatio 20.0%)" in event.message
    )
    status, reason, message = circuit_open_condition(BY_CLASS, decision.status)
    assert (status, reason) == ("True", BreakerReason.TRIPPED)
    assert message == "transient failures: 40.0% of 20 jobs failed (maxFailureRatio 20.0%)"
    pooled = decide_breaker(BY_CLASS, BreakerStatus(since=at(0)), window(timeout=12), at(10))
    assert "failures of other classes: 60.0% of 20 jobs failed" in pooled.events[0].message


@pytest.mark.parametrize(
    ("probe", "state"),
    [
        pytest.param({"transient": 1}, BreakerState.OPEN, id="one-transient-in-four-fails-it"),
        pytest.param({"validation": 3}, BreakerState.CLOSED, id="a-class-that-never-trips-passes"),
    ],
)
def test_the_probe_is_judged_per_class_too(probe: dict[str, float], state: BreakerState) -> None:
    history = scrapes((0, {"a": failing(0)}), (5, {"a": failing(4 - sum(probe.values()), **probe)}))
    decision = decide_breaker(BY_CLASS, BreakerStatus(BreakerState.HALF_OPEN, since=at(0)), history, at(5))
    assert decision.status.state == state


def test_a_breaker_without_classes_judges_every_failure_together_as_before() -> None:
    decision = decide_breaker(
        BREAKER, BreakerStatus(since=at(0)), window(transient=4, timeout=3, validation=3), at(10)
    )
    assert decision.status.state == BreakerState.OPEN
    assert decision.status.failure_class is None
    assert "50.0% of 20 jobs failed" in decision.events[0].message
    assert "failures:" not in decision.events[0].message


def test_a_closed_breaker_says_what_it_measured() -> None:
    decision = decide_breaker(BY_CLASS, BreakerStatus(since=at(0)), window(), at(10))
    _, reason, message = circuit_open_condition(BY_CLASS, decision.status)
    assert (reason, message) == (
        BreakerReason.CLOSED,
        "jobs flow; failures of other classes: 0.0% of 20 jobs failed",
    )
    assert circuit_open_condition(BREAKER, BreakerStatus())[2] == "jobs flow over 0 jobs"
