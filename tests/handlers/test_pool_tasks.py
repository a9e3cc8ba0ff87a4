"""Supervised pool tasks: an exception is reported and the task runs again; success resets the count."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from workerfleet.handlers import pool_tasks
from workerfleet.handlers.pool_tasks import PoolKey, PoolTasks, TaskContext, route_pool_event

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


EVENT_BODY: contextvars.ContextVar[str] = contextvars.ContextVar("event_body")
"""Stands in for kopf's cause of a watch event, which holds the event's whole body."""


class ContextRecorder(PoolTasks):
    """Starts one task per pool that records which event's body its context holds."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[PoolKey, str] = {}

    def update(self, body: dict[str, Any]) -> None:
        self.start((body["metadata"]["namespace"], body["metadata"]["name"]), self.run, "test")

    async def run(self, key: PoolKey) -> None:
        self.seen[key] = EVENT_BODY.get("none")


def test_pool_tasks_keep_one_event_context_not_one_per_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_tasks, "TASK_CONTEXT", TaskContext())

    async def scenario() -> dict[PoolKey, str]:
        tasks = ContextRecorder()
        for index in range(3):
            handler_context = contextvars.copy_context()
            handler_context.run(EVENT_BODY.set, f"the body of pool-{index}'s event")
            pool = {"metadata": {"namespace": "media", "name": f"pool-{index}"}, "spec": {}}
            handler_context.run(route_pool_event, tasks, "ADDED", pool)
        await asyncio.gather(*tasks._tasks.values())
        return tasks.seen

    seen = asyncio.run(scenario())

    assert set(seen.values()) == {"the body of pool-0's event"}, seen
