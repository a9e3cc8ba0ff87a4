"""The consume loop against hostile messages and unexpected errors (issue 22): every message is settled on
its first delivery, metric labels stay bounded, and a worker that cannot take jobs says so."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from devenv.hostile import every_kind
from tests.worker.fakes import MemoryBackend, run_async
from tests.worker.test_runtime import NOW, SPEC, Harness, recording
from workerfleet.worker.backend import Delivery
from workerfleet.worker.envelope import MessageLimits, decode
from workerfleet.worker.handlers import Job
from workerfleet.worker.health import Health
from workerfleet.worker.metrics import UNSERVED_JOB_TYPE, WorkerMetrics
from workerfleet.worker.runtime import Runtime

READ_BACK = MessageLimits(max_bytes=64 * 1024 * 1024)


def job_type_labels(metrics: WorkerMetrics) -> set[str]:
    return {
        sample.labels["job_type"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "job_type" in sample.labels
    }


@run_async
async def test_every_hostile_kind_is_dead_lettered_at_once_with_its_reason_under_one_label() -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    hostile = every_kind("unit", job_type="work")
    for message in hostile:
        await harness.backend.enqueue(message.body)
    good = await harness.put({"id": "good"})
    await harness.run_until(len(hostile) + 1)
    assert [job.id for job in calls] == [good]
    dead = [decode(body, READ_BACK) for _queue, body in harness.backend.moved]
    assert {queue for queue, _body in harness.backend.moved} == {"pool.dlq"}
    found = {
        message.kind.value: [letter.last_failure.reason for letter in dead if message.matches(letter)]  # type: ignore[union-attr]
        for message in hostile
    }
    assert found == {message.kind.value: [message.expected_reason] for message in hostile}
    assert all(letter.attempt == 1 for letter in dead)
    # The 250-character type never became a label of its own, in the in-flight gauge or the counters
    assert job_type_labels(harness.metrics) == {"work", UNSERVED_JOB_TYPE}
    assert harness.count("dead_lettered", job_type=UNSERVED_JOB_TYPE) == len(hostile)


@dataclass
class BrokenBackend(MemoryBackend):
    """Refuses to settle with an error no one expected (a bug), or fails every receive so."""

    broken_move: bool = False
    broken_receive: bool = False

    async def move(self, delivery: Delivery, queue: str | None, body: bytes) -> None:
        if self.broken_move:
            raise RuntimeError("an unexpected reply")
        await super().move(delivery, queue, body)

    async def receive(self, max_count: int, wait_seconds: float) -> Sequence[Delivery]:
        if self.broken_receive:
            raise RuntimeError("an unexpected reply")
        return await super().receive(max_count, wait_seconds)


def runtime(backend: MemoryBackend, health: Health, concurrency: int) -> Runtime:
    return Runtime(
        backend=backend,
        policies={"work": SPEC},
        handlers={"work": recording([])},
        metrics=WorkerMetrics("thumbs", "rev-1"),
        health=health,
        pool="thumbs",
        revision="rev-1",
        concurrency=concurrency,
        drain_seconds=1.0,
        pool_dead_letter_queue="pool.dlq",
        maintenance_interval_seconds=0.05,
        worker_id="worker-1",
        clock=lambda: NOW,
        sample=lambda: 0.0,
    )


async def eventually(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert condition(), "not within the time"


@run_async
async def test_jobs_left_claimed_by_unexpected_errors_fail_liveness_once_they_hold_every_slot() -> None:
    backend = BrokenBackend(broken_move=True)
    health = Health(stall_seconds=60)
    stop = asyncio.Event()
    loop = asyncio.create_task(runtime(backend, health, concurrency=2).run(stop))
    await backend.enqueue(b"not json")
    await eventually(lambda: not backend.waiting)
    await asyncio.sleep(0.05)
    assert health.liveness()[0], "one slot of two is still free"
    await backend.enqueue(b"[]")
    await eventually(lambda: not health.liveness()[0])
    assert health.liveness()[1] == "2 jobs left unsettled by unexpected errors hold every slot (2)"
    assert not loop.done(), "the worker keeps running"
    stop.set()
    await asyncio.wait_for(loop, timeout=10)


@run_async
async def test_a_receive_failing_unexpectedly_never_ends_the_worker_and_it_is_neither_ready_nor_live() -> (
    None
):
    backend = BrokenBackend(broken_receive=True)
    health = Health(stall_seconds=0.2)
    stop = asyncio.Event()
    loop = asyncio.create_task(runtime(backend, health, concurrency=1).run(stop))
    await eventually(lambda: not health.liveness()[0])
    assert health.liveness()[1].startswith("receiving has failed for")
    assert health.readiness() == (False, "receiving fails")
    assert not loop.done()
    backend.broken_receive = False
    await backend.enqueue(b"not json")
    await eventually(lambda: backend.moved and health.liveness()[0] and health.readiness()[0])
    stop.set()
    await asyncio.wait_for(loop, timeout=10)
