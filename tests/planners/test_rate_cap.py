"""The autoscaler's ceiling for rate-limited pools, and what one worker can run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.planners.test_poll import facts
from workerfleet.planners.breaker import Scrape, WorkerCounters, handler_rate_per_worker, worker_concurrency
from workerfleet.planners.scaling import RateCap, ScalingMemory, ScalingReason, plan_poll, pool_rate_cap

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rate", "per_replica", "replicas"), [(20, 8, 3), (20, 10, 2), (20, 20, 1), (0.5, 4, 1), (100, 1, 100)]
)
def test_replicas_a_rate_keeps_busy(rate: float, per_replica: float, replicas: int) -> None:
    assert RateCap(rate, per_replica).replicas() == replicas


def test_a_cap_needs_every_job_type_limited_and_a_measured_worker() -> None:
    assert pool_rate_cap([20.0, 5.0], 8.0) == RateCap(25.0, 8.0)
    assert pool_rate_cap([20.0, None], 8.0) is None, "an unlimited JobType may use every replica"
    assert pool_rate_cap([20.0], None) is None, "no handler time measured yet"
    assert pool_rate_cap([], 8.0) is None


def test_the_served_value_stops_at_the_replicas_the_limit_keeps_busy() -> None:
    plan = plan_poll(facts(1, 1_000, rate_cap=RateCap(20, 8)), ScalingMemory())
    assert plan.served_value == 30, "3 replicas at 10 jobs per replica"
    status, reason, message = plan.conditions.scaling_active
    assert (status, reason) == ("True", ScalingReason.RATE_LIMITED)
    assert "rate limit of 20 jobs/s keeps 3 replicas busy (8.0 jobs/s each)" in message


def test_a_small_backlog_is_not_raised_to_the_cap() -> None:
    plan = plan_poll(facts(1, 15, rate_cap=RateCap(20, 8)), ScalingMemory())
    assert plan.served_value == 15
    assert plan.conditions.scaling_active[1] == ScalingReason.SCALING_ON_DEPTH


def test_a_worker_runs_its_concurrency_over_its_mean_handler_time() -> None:
    history = [
        Scrape(START, {"a": WorkerCounters({}, 0, handler_seconds=10, handled=40)}),
        Scrape(
            START + timedelta(seconds=30),
            {
                "a": WorkerCounters({}, 0, handler_seconds=20, handled=80),  # 10 s for 40 jobs
                "b": WorkerCounters({}, 0, handler_seconds=10, handled=40),  # new: from zero
            },
        ),
    ]
    assert handler_rate_per_worker(history, START, concurrency=2) == pytest.approx(8.0)
    assert handler_rate_per_worker(history[:1], START, concurrency=2) is None


@pytest.mark.parametrize(
    ("env", "concurrency"),
    [
        ([], 1),
        ([{"name": "WORKERFLEET_CONCURRENCY", "value": "4"}], 4),
        ([{"name": "WORKERFLEET_CONCURRENCY", "value": "x"}], 1),
    ],
)
def test_worker_concurrency_from_the_template(env: list[dict[str, str]], concurrency: int) -> None:
    template = {"spec": {"containers": [{"name": "worker", "image": "w", "env": env}]}}
    assert worker_concurrency(template) == concurrency
