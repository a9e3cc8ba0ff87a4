"""The worker's side of the circuit breaker: the state file beside the policies caps what it takes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.worker.fakes import run_async
from tests.worker.test_runtime import SPEC, Harness, recording
from workerfleet.worker.breaker import BreakerGate
from workerfleet.worker.handlers import Job


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, state: str, since: str = "", probe_jobs: int = 0) -> None:
    path.write_text(json.dumps({"state": state, "since": since, "probeJobs": probe_jobs}))


def test_no_file_or_closed_takes_all_open_takes_nothing(tmp_path: Path) -> None:
    path, clock = tmp_path / "breaker.json", Clock()
    gate = BreakerGate(path, clock)
    assert gate.allowance(4) == 4
    write(path, "Open")
    assert gate.allowance(4) == 4, "read again only after a second"
    clock.now = 1.0
    assert gate.allowance(4) == 0
    write(path, "Closed")
    clock.now = 2.0
    assert gate.allowance(4) == 4


def test_half_open_allows_probe_jobs_per_period(tmp_path: Path) -> None:
    path, clock = tmp_path / "breaker.json", Clock()
    write(path, "HalfOpen", "t1", probe_jobs=3)
    gate = BreakerGate(path, clock)
    assert gate.allowance(2) == 2
    gate.took(2)
    assert gate.allowance(2) == 1
    gate.took(1)
    assert gate.allowance(2) == 0
    write(path, "HalfOpen", "t2", probe_jobs=3)  # opened and half-open again: a new probe
    clock.now = 1.0
    assert gate.allowance(5) == 3


def test_a_broken_file_keeps_the_last_state(tmp_path: Path) -> None:
    path, clock = tmp_path / "breaker.json", Clock()
    write(path, "Open")
    gate = BreakerGate(path, clock)
    assert gate.allowance(1) == 0
    path.write_text("{half written")
    clock.now = 1.0
    assert gate.allowance(1) == 0


@run_async
async def test_an_open_breaker_lets_held_jobs_finish_and_takes_no_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "breaker.json"
    calls: list[Job] = []
    release = asyncio.Event()

    async def slow(_: Job) -> None:
        await release.wait()

    harness = Harness(
        recording(calls, slow), concurrency=1, spec=SPEC.model_copy(update={"timeout_seconds": 10})
    )
    harness.runtime._breaker = BreakerGate(path)  # the gate the CLI passes
    await harness.put({"id": "held"})
    stop = asyncio.Event()
    loop = asyncio.create_task(harness.runtime.run(stop))
    for _ in range(200):
        if calls:
            break
        await asyncio.sleep(0.01)
    assert len(calls) == 1
    write(path, "Open")
    await asyncio.sleep(1.1)  # the gate reads the file again
    await harness.put({"id": "waits-1"})
    await harness.put({"id": "waits-2"})
    release.set()
    await asyncio.sleep(1.5)
    assert [job.payload["id"] for job in calls] == ["held"], "nothing new is taken while open"
    assert len(harness.backend.completed) == 1, "the held job finished and was completed"
    assert not harness.backend.moved, "nothing is dead-lettered for the breaker"
    assert len(harness.backend.waiting) == 2
    write(path, "Closed")
    for _ in range(300):
        if len(harness.backend.completed) == 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(loop, timeout=10)
    assert len(harness.backend.completed) == 3, "closed again, the waiting jobs run"
