"""Liveness and readiness of the worker as its probe server reports them, on a clock the test moves."""

from __future__ import annotations

import pytest

from workerfleet.worker.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("silent_seconds", "draining", "alive"),
    [
        (0.0, False, True),
        (10.0, False, True),
        (10.1, False, False),
        (3_600.0, False, False),
        (3_600.0, True, True),
    ],
)
def test_liveness_fails_only_when_the_loop_stands_still_past_the_limit_outside_a_drain(
    silent_seconds: float, draining: bool, alive: bool
) -> None:
    clock = Clock()
    health = Health(stall_seconds=10, clock=clock)
    health.beat()
    if draining:
        health.draining()
    clock.now += silent_seconds
    assert health.liveness()[0] is alive


def test_a_beat_heals_liveness() -> None:
    clock = Clock()
    health = Health(stall_seconds=10, clock=clock)
    clock.now += 11
    assert health.liveness()[0] is False
    health.beat()
    assert health.liveness() == (True, "the consume loop is turning")


@pytest.mark.parametrize(
    ("connected", "draining", "ready"),
    [(False, False, False), (True, False, True), (True, True, False), (False, True, False)],
)
def test_ready_only_while_connected_and_not_draining(connected: bool, draining: bool, ready: bool) -> None:
    health = Health(stall_seconds=10)
    health.policies_loaded(3)
    health.connected(connected)
    if draining:
        health.draining()
    assert health.readiness()[0] is ready


def test_a_receive_failing_past_the_stall_limit_fails_liveness_and_readiness_until_one_returns() -> None:
    clock = Clock()
    health = Health(stall_seconds=10, clock=clock)
    health.connected(True)
    health.receiving(ok=False)
    assert health.readiness() == (False, "receiving fails")
    clock.now += 5
    health.beat()
    health.receiving(ok=False)  # still failing: counted from the first failure
    clock.now += 6
    health.beat()
    assert health.liveness() == (False, "receiving has failed for 11s (limit 10s)")
    health.receiving(ok=True)
    assert health.liveness()[0] is True
    assert health.readiness()[0] is True


@pytest.mark.parametrize(("held", "alive"), [(0, True), (3, True), (4, False)])
def test_jobs_left_unsettled_fail_liveness_once_they_hold_every_slot(held: int, alive: bool) -> None:
    health = Health(stall_seconds=10)
    health.left_unsettled(held, capacity=4)
    assert health.liveness()[0] is alive
