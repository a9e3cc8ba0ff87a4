"""The schedule of retries and resyncs, on a clock the test moves."""

from __future__ import annotations

import itertools

from workerfleet.handlers.resync import Schedule
from workerfleet.planners.resync import RETRY_BASE_SECONDS

POOL = ("media", "thumbs")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def schedule(clock: Clock, period: float = 60.0) -> Schedule:
    return Schedule(period, clock=clock, jitter=lambda: 0.0)


def test_a_tracked_pool_is_resynced_once_per_period_with_verification() -> None:
    clock = Clock()
    pools = schedule(clock)
    pools.track(POOL)
    clock.now += 59
    assert pools.due() == []
    clock.now += 1
    assert pools.due() == [(POOL, True)]
    assert pools.due() == []  # not again until the next period
    clock.now += 60
    assert pools.due() == [(POOL, True)]


def test_tracking_again_keeps_the_pools_times() -> None:
    clock = Clock()
    pools = schedule(clock)
    pools.track(POOL)
    clock.now += 30
    pools.track(POOL)  # every watch event of the pool
    clock.now += 30
    assert pools.due() == [(POOL, True)]


def test_failures_are_retried_with_growing_waits_and_a_success_ends_them() -> None:
    clock = Clock()
    pools = schedule(clock, period=3600)
    pools.track(POOL)
    waits = []
    for _ in range(4):
        pools.failed(POOL)
        start = clock.now
        while not pools.due():
            clock.now += 0.5
        waits.append(clock.now - start)
    assert waits == [RETRY_BASE_SECONDS * 2**n for n in range(4)]
    assert pools.failures(POOL) == 4
    pools.failed(POOL)
    pools.succeeded(POOL)
    clock.now += 1000
    assert pools.due() == []
    assert pools.failures(POOL) == 0


def test_a_forgotten_pool_is_neither_retried_nor_resynced() -> None:
    clock = Clock()
    pools = schedule(clock)
    pools.track(POOL)
    pools.failed(POOL)
    pools.forget(POOL)
    pools.failed(POOL)  # a reconcile that was running when the pool went
    clock.now += 3600
    assert pools.due() == []
    assert len(pools) == 0


def test_pools_seen_together_have_their_first_resync_spread_over_the_second_half_of_the_period() -> None:
    clock = Clock()
    draws = itertools.cycle(index / 10 for index in range(10))
    pools = Schedule(100.0, clock=clock, jitter=lambda: next(draws))
    for index in range(10):
        pools.track(("media", f"pool-{index}"))
    due_per_tenth = []
    for _ in range(10):
        clock.now += 10
        due_per_tenth.append(len(pools.due()))
    assert due_per_tenth == [0] * 5 + [2] * 5
