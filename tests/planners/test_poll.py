"""One poll of an autoscaled pool, decided by `plan_poll`: what is served to the HPA, the replicas the
operator sets itself with the Event that says why, status.queue and the autoscaling conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workerfleet.api.workerpool import Autoscaling
from workerfleet.planners.scaling import (
    PAUSED_ANNOTATION,
    PAUSED_REPLICAS_ANNOTATION,
    PollFacts,
    ScalingMemory,
    ScalingReason,
    observe_drain,
    plan_poll,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


def scaling(**overrides: Any) -> Autoscaling:
    settings = {"minReplicas": 0, "maxReplicas": 10, "targetDepthPerReplica": 10, "cooldownSeconds": 60}
    return Autoscaling.model_validate({**settings, **overrides})


def facts(replicas: int, depth: int | None, **overrides: Any) -> PollFacts:
    settings: dict[str, Any] = {
        "scaling": scaling(),
        "replicas": replicas,
        "annotations": {},
        "depth": depth,
        "oldest_age_seconds": None,
        "error": None if depth is not None else "connection refused",
        "error_reason": None,
        "refusal": None,
        "deadline_seconds": None,
        "now": START,
    }
    return PollFacts(**{**settings, **overrides})


# --- Throughput estimate -----------------------------------------------------------------------


def test_no_estimate_until_the_queue_drains() -> None:
    memory = observe_drain(ScalingMemory(), 100, 2, START)
    assert memory.throughput_per_replica is None
    memory = observe_drain(memory, 120, 2, START + timedelta(seconds=10))  # growing: says nothing
    assert memory.throughput_per_replica is None


def test_drain_rate_per_replica_is_smoothed() -> None:
    memory = observe_drain(ScalingMemory(), 100, 2, START)
    memory = observe_drain(memory, 80, 2, START + timedelta(seconds=10))  # 20 jobs / 10 s / 2 replicas
    assert memory.throughput_per_replica == 1.0
    memory = observe_drain(memory, 40, 2, START + timedelta(seconds=20))  # 2.0 now, smoothed
    assert memory.throughput_per_replica is not None
    assert 1.0 < memory.throughput_per_replica < 2.0


def test_zero_replicas_teach_nothing() -> None:
    memory = observe_drain(ScalingMemory(), 100, 0, START)
    memory = observe_drain(memory, 50, 0, START + timedelta(seconds=10))
    assert memory.throughput_per_replica is None


# --- One poll ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "memory", "served", "scale_to", "event", "message"),
    [
        # a pool asleep at zero with work waiting is woken to one replica
        (
            facts(0, 25),
            ScalingMemory(),
            25,
            1,
            ScalingReason.ACTIVATED,
            "queue depth 25 is above the activation depth: scaled 0 -> 1",
        ),
        # with work and replicas, the HPA scales: the operator only serves the depth
        (facts(3, 25), ScalingMemory(), 25, None, None, None),
        # idle at one replica through the cooldown: back to zero
        (
            facts(1, 0),
            ScalingMemory(idle_since=START - timedelta(seconds=61)),
            0,
            0,
            ScalingReason.DEACTIVATED,
            "queue idle for the cooldown: scaled from 1 to 0",
        ),
        # idle, but not for the cooldown yet: nothing set
        (facts(1, 0), ScalingMemory(idle_since=START - timedelta(seconds=30)), 0, None, None, None),
        # a pause annotation with a count sets that count and says so
        (
            facts(4, 25, annotations={PAUSED_REPLICAS_ANNOTATION: "2"}),
            ScalingMemory(),
            20,
            2,
            ScalingReason.PAUSED,
            "autoscaling paused by annotation: scaled 4 -> 2 and held there",
        ),
        # an unreadable queue without fallback serves nothing and holds
        (facts(4, None), ScalingMemory(), None, None, None, None),
        # with fallback, after the threshold: a pool asleep is woken to the fallback count
        (
            facts(0, None, scaling=scaling(fallback={"failureThreshold": 2, "replicas": 3})),
            ScalingMemory(failures=1),
            30,
            3,
            ScalingReason.ACTIVATED,
            "queue unreadable (connection refused): scaled 0 -> 3, the fallback replicas",
        ),
    ],
)
def test_a_poll_serves_a_value_and_sets_replicas_only_where_the_hpa_cannot(
    given: PollFacts,
    memory: ScalingMemory,
    served: int | None,
    scale_to: int | None,
    event: str | None,
    message: str | None,
) -> None:
    plan = plan_poll(given, memory)
    assert (plan.served_value, plan.scale_to) == (served, scale_to)
    if event is None:
        assert plan.scale_event is None
    else:
        assert plan.scale_event is not None
        assert (plan.scale_event.type, plan.scale_event.reason, plan.scale_event.message) == (
            "Normal",
            event,
            message,
        )


def test_a_read_resets_the_failures_and_a_failed_read_counts_one_more() -> None:
    failed = plan_poll(facts(2, None), ScalingMemory(failures=2))
    assert failed.memory.failures == 3
    assert failed.queue_status == {"consecutiveFailures": 3}
    assert failed.conditions.queue_reachable == (
        "False",
        ScalingReason.QUEUE_UNREACHABLE,
        "3 failed reads in a row: connection refused",
    )
    read = plan_poll(facts(2, 7), failed.memory)
    assert read.memory.failures == 0
    assert read.queue_status == {"consecutiveFailures": 0, "depth": 7}
    assert read.conditions.queue_reachable == ("True", ScalingReason.DEPTH_READ, "7 jobs waiting")


def test_a_read_stopped_at_a_bound_names_the_bound_as_the_reason() -> None:
    message = "prometheus at http://p/api/v1/query: answer larger than 1024 KiB, the operator's bound"
    plan = plan_poll(facts(2, None, error=message, error_reason="AnswerTooLarge"), ScalingMemory())
    assert plan.conditions.queue_reachable == (
        "False",
        "AnswerTooLarge",
        f"1 failed reads in a row: {message}",
    )


def test_the_idle_clock_starts_at_the_first_idle_poll_and_stops_with_work() -> None:
    idle = plan_poll(facts(1, 0), ScalingMemory())
    assert idle.memory.idle_since == START
    busy = plan_poll(facts(1, 50, now=START + timedelta(seconds=5)), idle.memory)
    assert busy.memory.idle_since is None


def test_a_refused_queue_says_why_in_queue_reachable() -> None:
    refusal = (ScalingReason.ADDRESS_NOT_ALLOWED, "redis.other:6379 is not in allowedAddresses.queues")
    plan = plan_poll(facts(2, None, error=None, refusal=refusal), ScalingMemory())
    assert plan.conditions.queue_reachable == ("False", *refusal)
    assert (plan.served_value, plan.scale_to) == (None, None)


def test_an_unreadable_pause_annotation_holds_still_and_names_the_annotation() -> None:
    plan = plan_poll(facts(3, 90, annotations={PAUSED_REPLICAS_ANNOTATION: "many"}), ScalingMemory())
    assert plan.scale_to is None
    assert plan.served_value == 30  # holds the 3 replicas it has
    status, reason, message = plan.conditions.scaling_active
    assert (status, reason) == ("False", ScalingReason.PAUSED)
    assert PAUSED_REPLICAS_ANNOTATION in message


def test_a_paused_pool_without_a_count_holds_its_replicas() -> None:
    plan = plan_poll(facts(3, 500, annotations={PAUSED_ANNOTATION: "true"}), ScalingMemory())
    assert (plan.served_value, plan.scale_to, plan.scale_event) == (30, None, None)
    assert plan.conditions.scaling_active[1] == ScalingReason.PAUSED


def test_an_open_circuit_breaker_holds_replicas_on_a_growing_backlog() -> None:
    plan = plan_poll(facts(3, 5_000, circuit_open=True), ScalingMemory())
    assert plan.served_value == 30, "the value that keeps the HPA at 3 replicas (10 per replica)"
    assert plan.scale_to is None
    status, reason, message = plan.conditions.scaling_active
    assert (status, reason) == ("False", ScalingReason.CIRCUIT_OPEN)
    assert "holding 3 replicas" in message


def test_a_pause_annotation_still_wins_over_the_breaker() -> None:
    plan = plan_poll(
        facts(3, 90, circuit_open=True, annotations={PAUSED_REPLICAS_ANNOTATION: "2"}), ScalingMemory()
    )
    assert plan.scale_to == 2
    assert plan.conditions.scaling_active[1] == ScalingReason.PAUSED
