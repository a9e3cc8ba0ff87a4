"""Reconciles that no watch event asks for: retries of failed ones, and a periodic resync of every pool.

A reconcile that could not apply a child (KEDA not installed yet, a quota, a taken name, the API
server away) is tried again after a capped exponential backoff, so the pool recovers by itself once
the cause is gone. Every pool is also reconciled once per resync period with `verify`, which reads
the children the operator does not watch instead of trusting what it remembers: a hand edit of any
child is put back within one period. A resync of a pool whose children are as applied writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from workerfleet.handlers.activity import ACTIVITY
from workerfleet.handlers.pool_tasks import PoolKey
from workerfleet.planners.resync import (
    DEFAULT_RESYNC_SECONDS,
    first_resync_delay,
    resync_delay,
    retry_delay,
)

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
"""How often the schedule is looked at: the granularity of retries and resyncs."""

Reconcile = Callable[..., None]
"""reconcile_by_name(namespace, name, verify=...)."""


@dataclass
class _Entry:
    resync_due: float
    retry_due: float | None = None
    failures: int = 0


class Schedule:
    """When each known pool is due for a retry or a resync; shared by handler threads."""

    def __init__(
        self,
        period: float = DEFAULT_RESYNC_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.period = period
        self._clock = clock
        self._jitter = jitter
        self._lock = threading.Lock()
        self._pools: dict[PoolKey, _Entry] = {}

    def track(self, key: PoolKey) -> None:
        """A pool exists: resync it within one period (a pool already known keeps its times)."""
        with self._lock:
            if key not in self._pools:
                self._pools[key] = _Entry(self._clock() + first_resync_delay(self.period, self._jitter()))

    def forget(self, key: PoolKey) -> None:
        with self._lock:
            self._pools.pop(key, None)

    def succeeded(self, key: PoolKey) -> None:
        with self._lock:
            entry = self._pools.get(key)
            if entry is not None:
                entry.retry_due, entry.failures = None, 0

    def failed(self, key: PoolKey) -> None:
        """A reconcile of the pool failed: retry it after the backoff its failures in a row earn."""
        with self._lock:
            entry = self._pools.get(key)
            if entry is not None:
                entry.failures += 1
                entry.retry_due = self._clock() + retry_delay(entry.failures, self._jitter())

    def failures(self, key: PoolKey) -> int:
        with self._lock:
            entry = self._pools.get(key)
            return entry.failures if entry is not None else 0

    def due(self) -> list[tuple[PoolKey, bool]]:
        """The pools due now, each with whether it is a resync (True) or only a retry (False)."""
        now = self._clock()
        result = []
        with self._lock:
            for key, entry in self._pools.items():
                resync = entry.resync_due <= now
                if resync:
                    entry.resync_due = self._next_resync()
                if resync or (entry.retry_due is not None and entry.retry_due <= now):
                    entry.retry_due = None
                    result.append((key, resync))
        return result

    def _next_resync(self) -> float:
        """When a resync that starts now is next due (absolute, on the schedule's clock)."""
        return self._clock() + resync_delay(self.period, self._jitter())

    def __len__(self) -> int:
        return len(self._pools)


SCHEDULE = Schedule()


async def run_schedule(schedule: Schedule, reconcile: Reconcile) -> None:
    """Reconcile each pool when it is due, one at a time, until cancelled; nothing while on standby."""
    while True:
        await asyncio.sleep(TICK_SECONDS)
        if not ACTIVITY.is_active():
            continue
        for (namespace, name), verify in schedule.due():
            try:
                await asyncio.to_thread(reconcile, namespace, name, verify=verify)
            except Exception:
                logger.exception("reconciling %s/%s again failed; retried later", namespace, name)
