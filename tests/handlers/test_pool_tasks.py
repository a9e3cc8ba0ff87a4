"""Supervised pool tasks: an exception is reported and the task runs again; success resets the count."""

from __future__ import annotations

import asyncio
from typing import Any

from workerfleet.handlers.pool_tasks import PoolKey, PoolTasks

KEY = ("media", "thumbs")


class Recorded(PoolTasks):
    """Runs a task that fails `failures` times before it finishes; records what the supervisor reports."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.remaining = failures
        self.runs = 0
        self.reported: list[tuple[str, int]] = []

    def update(self, body: dict[str, Any]) -> None:
        self.start(KEY, self.run, "test")

    async def run(self, key: PoolKey) -> None:
        self.runs += 1
        if self.remaining:
            self.remaining -= 1
            raise RuntimeError(f"refused #{self.runs}")

    async def failed(self, key: PoolKey, error: Exception, failures: int) -> None:
        self.reported.append((str(error), failures))
        if failures == 2:
            raise ConnectionError("the report fails too")  # must not end the task


def test_a_failing_task_runs_again_after_each_failure_until_it_succeeds() -> None:
    async def scenario() -> Recorded:
        tasks = Recorded(failures=3)
        tasks.update({})
        await asyncio.wait_for(tasks._tasks[KEY], timeout=10)
        return tasks

    tasks = asyncio.run(scenario())
    assert tasks.runs == 4
    assert tasks.reported == [("refused #1", 1), ("refused #2", 2), ("refused #3", 3)]
    assert not tasks.succeeded(KEY), "a task that finished carries no failures into its next start"


def test_success_resets_the_failures_in_a_row() -> None:
    tasks = Recorded(failures=0)
    tasks._failures[KEY] = 5
    assert tasks.succeeded(KEY)
    assert not tasks.succeeded(KEY)


def test_stopping_cancels_a_task_waiting_to_run_again() -> None:
    async def scenario() -> bool:
        tasks = Recorded(failures=1000)
        tasks.update({})
        await asyncio.sleep(0.05)
        task = tasks._tasks[KEY]
        tasks.stop(KEY)
        await asyncio.gather(task, return_exceptions=True)
        return task.cancelled()

    assert asyncio.run(scenario())
