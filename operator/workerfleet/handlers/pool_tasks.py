"""One asyncio task per pool, started and stopped by the pools' watch events.

Tasks rather than kopf daemons: a daemon makes kopf put a finalizer on every pool, which would block
deleting pools (and their namespaces) whenever the operator is not running.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

PoolKey = tuple[str, str]
"""(namespace, name) of a pool."""


def pool_key(body: Mapping[str, Any]) -> PoolKey:
    return (body["metadata"].get("namespace", ""), body["metadata"]["name"])


class PoolTasks:
    """The running tasks by pool; `update` decides from a pool's body whether its task should run."""

    def __init__(self) -> None:
        self._tasks: dict[PoolKey, asyncio.Task[None]] = {}

    def update(self, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def start(self, key: PoolKey, run: Callable[[PoolKey], Coroutine[Any, Any, None]], what: str) -> None:
        """Start `run(key)` unless the pool's task is running already."""
        if key not in self._tasks or self._tasks[key].done():
            self._tasks[key] = asyncio.create_task(run(key), name=f"{what} {key[0]}/{key[1]}")

    def stop(self, key: PoolKey) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def stop_all(self) -> None:
        tasks = list(self._tasks.values())
        for key in list(self._tasks):
            self.stop(key)
        await asyncio.gather(*tasks, return_exceptions=True)


def route_pool_event(tasks: PoolTasks, event_type: str | None, body: Mapping[str, Any]) -> None:
    """A pool's watch event: a deleted (or deleting) pool's task stops, any other change updates it."""
    raw: dict[str, Any] = json.loads(json.dumps(dict(body)))
    if event_type == "DELETED" or raw["metadata"].get("deletionTimestamp"):
        tasks.stop(pool_key(raw))
    else:
        tasks.update(raw)
