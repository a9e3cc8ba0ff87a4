"""The reconcile queue: requests for one pool coalesce, a pool never runs twice at once, a request made
while it runs runs it once more, at most `workers` reconciles run together, and a failure is logged."""

from __future__ import annotations

import asyncio
import threading
import time

from workerfleet.handlers.reconcile_queue import ReconcileQueue

A, B, C = ("ns", "a"), ("ns", "b"), ("ns", "c")


class Recorder:
    """A blocking reconcile that records its runs and how many ran at once."""

    def __init__(self, seconds: float = 0.05, failing: tuple[str, str] | None = None) -> None:
        self.seconds = seconds
        self.failing = failing
        self.runs: list[tuple[str, str]] = []
        self.running: set[tuple[str, str]] = set()
        self.most_at_once = 0
        self.overlapped = False
        self._lock = threading.Lock()

    def __call__(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._lock:
            self.overlapped |= key in self.running
            self.running.add(key)
            self.most_at_once = max(self.most_at_once, len(self.running))
            self.runs.append(key)
        time.sleep(self.seconds)
        with self._lock:
            self.running.discard(key)
        if key == self.failing:
            raise RuntimeError("refused")


async def _drained(queue: ReconcileQueue, recorder: Recorder) -> None:
    for _ in range(1000):
        await asyncio.sleep(0.02)
        if queue.idle and not recorder.running:
            return
    raise AssertionError("the queue did not drain within 20 s")


async def _running(recorder: Recorder, key: tuple[str, str]) -> None:
    for _ in range(1000):
        if key in recorder.running:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{key} did not start within 5 s")


def test_requests_for_a_waiting_pool_coalesce() -> None:
    async def scenario() -> Recorder:
        recorder, queue = Recorder(), ReconcileQueue(workers=1)
        try:
            for key in (A, B, A, B, A, C):
                queue.request(key, recorder)
            await _drained(queue, recorder)
        finally:
            await queue.stop()
        return recorder

    recorder = asyncio.run(scenario())
    assert sorted(recorder.runs) == [A, B, C]


def test_a_request_while_the_pool_runs_runs_it_once_more_and_never_twice_at_once() -> None:
    async def scenario() -> Recorder:
        recorder, queue = Recorder(seconds=0.2), ReconcileQueue(workers=4)
        try:
            queue.request(A, recorder)
            await _running(recorder, A)
            queue.request(A, recorder)
            queue.request(A, recorder)
            await _drained(queue, recorder)
        finally:
            await queue.stop()
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.runs == [A, A]
    assert not recorder.overlapped


def test_at_most_workers_run_at_once_and_a_failure_does_not_stop_the_queue() -> None:
    pools = [("ns", f"pool-{index}") for index in range(12)]

    async def scenario() -> Recorder:
        recorder, queue = Recorder(failing=pools[0]), ReconcileQueue(workers=3)
        try:
            for key in pools:
                queue.request(key, recorder)
            await _drained(queue, recorder)
        finally:
            await queue.stop()
        return recorder

    recorder = asyncio.run(scenario())
    assert sorted(recorder.runs) == sorted(pools)
    assert recorder.most_at_once == 3


def test_a_forgotten_pool_is_not_reconciled() -> None:
    async def scenario() -> Recorder:
        recorder, queue = Recorder(seconds=0.2), ReconcileQueue(workers=1)
        try:
            queue.request(A, recorder)
            queue.request(B, recorder)
            queue.forget(B)  # deleted before its turn
            await _drained(queue, recorder)
        finally:
            await queue.stop()
        return recorder

    assert asyncio.run(scenario()).runs == [A]
