"""Which pools serve each JobType, kept from the pools' own watch events.

Not a kopf index: with kopf's indexes every object's handler waits until all objects of the
resource are indexed, which together with any limit on kopf's workers deadlocks start-up past that
many objects. This index needs no waiting: a pool is indexed by its own event before it is
reconciled, so a JobType event finds every pool already seen, and a pool not seen yet is reconciled
by its own first event anyway.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

from workerfleet.handlers.pool_tasks import PoolKey


class JobTypeIndex:
    """Pool → the JobTypes it names, and the reverse; safe to use from handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job_types: dict[PoolKey, frozenset[str]] = {}
        self._pools: defaultdict[PoolKey, set[str]] = defaultdict(set)
        """(namespace, JobType) → names of the pools in that namespace that serve it."""

    def update(self, namespace: str, pool: str, job_types: Iterable[str]) -> None:
        new = frozenset(job_types)
        with self._lock:
            old = self._job_types.get((namespace, pool), frozenset())
            for job_type in old - new:
                self._discard(namespace, job_type, pool)
            for job_type in new - old:
                self._pools[(namespace, job_type)].add(pool)
            self._job_types[(namespace, pool)] = new

    def forget(self, namespace: str, pool: str) -> None:
        with self._lock:
            for job_type in self._job_types.pop((namespace, pool), frozenset()):
                self._discard(namespace, job_type, pool)

    def pools_serving(self, namespace: str, job_type: str) -> list[str]:
        with self._lock:
            return sorted(self._pools.get((namespace, job_type), ()))

    def _discard(self, namespace: str, job_type: str, pool: str) -> None:
        pools = self._pools.get((namespace, job_type))
        if pools is not None:
            pools.discard(pool)
            if not pools:
                del self._pools[(namespace, job_type)]
