"""Taking turns for rate-limited job types: the rule, and one process keeping it alone."""

from __future__ import annotations

import asyncio
import time

import pytest

from workerfleet.api.jobtype import RateLimit
from workerfleet.worker.rate_limit import LocalPacer, reserve_locally

TEN_PER_SECOND = RateLimit(jobs_per_second=10)


def test_turns_are_spaced_by_the_interval() -> None:
    wait, tat = reserve_locally(0, 1_000, TEN_PER_SECOND)
    assert (wait, tat) == (0, 1_100)
    wait, tat = reserve_locally(tat, 1_000, TEN_PER_SECOND)
    assert (wait, tat) == (100, 1_200)
    wait, _ = reserve_locally(tat, 1_500, TEN_PER_SECOND)
    assert wait == 0, "a quiet spell lets the next job start at once"


def test_a_burst_starts_at_once_then_the_rate_holds() -> None:
    limit = RateLimit(jobs_per_second=10, burst=3)
    tat, waits = 0.0, []
    for _ in range(5):
        wait, tat = reserve_locally(tat, 1_000, limit)
        waits.append(wait)
    assert waits == pytest.approx([0, 0, 0, 100, 200])


def test_a_local_pacer_keeps_the_rate_and_leaves_other_types_alone() -> None:
    pacer = LocalPacer({"limited": RateLimit(jobs_per_second=20)})

    async def run() -> float:
        assert await pacer.take_turn("free")
        started = time.monotonic()
        assert all(await asyncio.gather(*(pacer.take_turn("limited") for _ in range(11))))
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert 0.45 <= elapsed < 1.0, f"11 turns at 20/s take 0.5 s, not {elapsed:.2f} s"
