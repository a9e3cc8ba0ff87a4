"""One asyncio task per pool, started and stopped by the pools' watch events.

Tasks rather than kopf daemons: a daemon makes kopf put a finalizer on every pool, which would block
deleting pools (and their namespaces) whenever the operator is not running.

Every task is supervised: an exception (the API server restarting, a permission taken away) is
logged, counted, reported through `failed`, and the task runs again after a capped, jittered backoff,
instead of ending until the pool's next watch event (which may never come).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
from collections.abc import Callable, Coroutine, Iterator, Mapping, MutableMapping
from typing import Any

from prometheus_client import Counter

from workerfleet.planners.supervision import retry_delay

logger = logging.getLogger(__name__)

TASK_FAILURES = Counter(
    "workerfleet_pool_task_failures_total",
    "Exceptions that ended a pool's long-running task (which then ran again after a backoff), by task.",
    ["task"],
)

PoolKey = tuple[str, str]
"""(namespace, name) of a pool."""


def pool_key(body: Mapping[str, Any]) -> PoolKey:
    return (body["metadata"].get("namespace", ""), body["metadata"]["name"])


class TaskContext:
    """The context every pool's task runs in: a copy of the first pool watch event handler's.

    A task inherits the context it is made in, and keeps it as long as it runs. Made in a watch event's
    handler, that context holds kopf's cause of that event: the pool's whole body as the event brought
    it, kopf's wrappers and patch around it, a few tens of KiB a pool, for as long as the pool lives.
    What the tasks need of it is the same for every event (kopf's event posting); one captured context,
    copied for each task, holds one body, not one a pool."""

    def __init__(self) -> None:
        self._captured: contextvars.Context | None = None

    def capture(self) -> None:
        """Keep the current context if none is kept yet; called from the pools' watch event handlers."""
        if self._captured is None:
            self._captured = contextvars.copy_context()

    def for_task(self) -> contextvars.Context | None:
        """A copy of the kept context; None (the current one) before any watch event came."""
        return None if self._captured is None else self._captured.copy()


TASK_CONTEXT = TaskContext()


class PoolBodies(MutableMapping[PoolKey, dict[str, Any]]):
    """The pool bodies a set of tasks works from, each kept as one compact JSON bytes object and
    decoded when read (every read is a fresh copy).

    A parsed body is a few hundred small objects (5-10 KiB a pool without managedFields), kept for
    every pool by each task set that serves it; as bytes it is one allocation of about a third of that,
    and decoding it once a round costs microseconds."""

    def __init__(self) -> None:
        self._encoded: dict[PoolKey, bytes] = {}

    def __getitem__(self, key: PoolKey) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self._encoded[key])
        return body

    def __setitem__(self, key: PoolKey, body: dict[str, Any]) -> None:
        self._encoded[key] = json.dumps(body, separators=(",", ":")).encode()

    def __delitem__(self, key: PoolKey) -> None:
        del self._encoded[key]

    def __iter__(self) -> Iterator[PoolKey]:
        return iter(self._encoded)

    def __len__(self) -> int:
        return len(self._encoded)


class PoolTasks:
    """The running tasks by pool; `update` decides from a pool's body whether its task should run."""

    def __init__(self) -> None:
        self._tasks: dict[PoolKey, asyncio.Task[None]] = {}
        self._failures: dict[PoolKey, int] = {}
        """Failures in a row of each pool's task; reset by `succeeded`."""

    def update(self, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def start(self, key: PoolKey, run: Callable[[PoolKey], Coroutine[Any, Any, None]], what: str) -> None:
        """Start `run(key)`, supervised, unless the pool's task is running already."""
        if key not in self._tasks or self._tasks[key].done():
            self._tasks[key] = asyncio.create_task(
                self._supervise(key, run, what),
                name=f"{what} {key[0]}/{key[1]}",
                context=TASK_CONTEXT.for_task(),
            )

    async def _supervise(
        self, key: PoolKey, run: Callable[[PoolKey], Coroutine[Any, Any, None]], what: str
    ) -> None:
        """Run until `run` returns; after an exception, report it, back off, and run it again."""
        while True:
            try:
                await run(key)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # whatever it is, the task must come back
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = retry_delay(failures, random.random())  # noqa: S311  (jitter, not security)
                TASK_FAILURES.labels(what).inc()
                logger.exception(
                    "%s of %s/%s failed (%d in a row); running it again in %.1fs",
                    what,
                    *key,
                    failures,
                    delay,
                )
                await self._report_failure(key, error, failures)
                await asyncio.sleep(delay)
            else:
                self._failures.pop(key, None)
                return

    async def _report_failure(self, key: PoolKey, error: Exception, failures: int) -> None:
        try:
            await self.failed(key, error, failures)
        except asyncio.CancelledError:
            raise
        except Exception:  # the report needs the API server too, which may be down
            logger.warning("could not report the failure of %s/%s's task", *key, exc_info=True)

    async def failed(self, key: PoolKey, error: Exception, failures: int) -> None:
        """Make a failing task visible on its pool (a condition, an Event); best effort."""

    def succeeded(self, key: PoolKey) -> bool:
        """A task's round went well: its failures in a row start again from 0. True if it was failing."""
        return self._failures.pop(key, 0) > 0

    def stop(self, key: PoolKey) -> None:
        self._failures.pop(key, None)
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
    # A plain copy (kopf's body is a view of what the next event replaces), without managedFields: the
    # server-side apply bookkeeping is most of a pool's size, and a poller keeps its pool's body.
    TASK_CONTEXT.capture()
    metadata = {key: value for key, value in body["metadata"].items() if key != "managedFields"}
    raw: dict[str, Any] = json.loads(json.dumps({**body, "metadata": metadata}))
    if event_type == "DELETED" or raw["metadata"].get("deletionTimestamp"):
        tasks.stop(pool_key(raw))
    else:
        tasks.update(raw)
