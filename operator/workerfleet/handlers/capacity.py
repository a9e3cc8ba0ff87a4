"""What one worker of each pool can run, in jobs per second: measured by the worker watch from the
workers' handler times, read by the autoscaler to stop at the replicas a rate limit keeps busy."""

from __future__ import annotations

import threading


class WorkerCapacity:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_replica: dict[tuple[str, str], float] = {}
        self._wanted: set[tuple[str, str]] = set()

    def want(self, namespace: str, pool: str, wanted: bool) -> None:
        """Whether the autoscaler needs the measure (the pool serves a rate-limited JobType)."""
        with self._lock:
            if wanted:
                self._wanted.add((namespace, pool))
            else:
                self._wanted.discard((namespace, pool))

    def wanted(self, namespace: str, pool: str) -> bool:
        with self._lock:
            return (namespace, pool) in self._wanted

    def observe(self, namespace: str, pool: str, per_replica: float | None) -> None:
        """The latest measure; None keeps the previous one (no job finished within the window)."""
        if per_replica is not None:
            with self._lock:
                self._per_replica[(namespace, pool)] = per_replica

    def get(self, namespace: str, pool: str) -> float | None:
        with self._lock:
            return self._per_replica.get((namespace, pool))

    def forget(self, namespace: str, pool: str) -> None:
        with self._lock:
            self._per_replica.pop((namespace, pool), None)
            self._wanted.discard((namespace, pool))


WORKER_CAPACITY = WorkerCapacity()
