"""The reconciles watch events ask for, queued by pool name and run a bounded number at a time.

A watch event's handler only notes which pool to reconcile and returns: kopf then lets go of the
event's body at once. Were the handler to run the reconcile itself (a blocking one, in kopf's thread
pool), every object with an event waiting for a free thread would keep its body alive until its turn:
at start-up that is every pool and every Deployment at once, a few tens of KiB of short-lived objects
each, interleaved with the long-lived ones, and Python's allocator keeps an arena for as long as a
single object in it lives. A reconcile reads what it needs from the watch memory instead, when its
turn comes.

Requests for a pool already waiting are one request (the reconcile reads the newest state anyway);
a request for a pool being reconciled runs it once more afterwards; one pool is never reconciled
twice at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import functools
import gc
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from workerfleet.handlers.pool_tasks import PoolKey

logger = logging.getLogger(__name__)

MAX_CONCURRENT_RECONCILES = 16
"""Threads that run blocking reconciles: caps the API calls in flight from one operator replica.

This is a limit on threads, not kopf's `queueing.worker_limit`: kopf's per-object workers are cheap
tasks and stay unlimited, so none can hold a slot that another object's start-up waits for (with a
worker limit and a kopf index, every worker waits for all objects to be indexed, and more objects
than the limit never start)."""

RELEASE_EVERY = 200
"""Reconciles between two releases of free memory to the operating system while the queue is busy."""
RELEASE_AFTER_IDLE_SECONDS = 5.0
"""A release this long after the queue ran dry (a catch-up, a burst of changes, is over)."""


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    function = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    return function if callable(function) else None  # glibc only; elsewhere nothing to call


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Free unreachable cycles, then give glibc's free pages back to the operating system.

    Python's own allocator gives back an arena once it is empty; objects of more than 512 bytes (the
    watch memory's JSON, responses) live in glibc's heap instead, whose free pages between live
    chunks only `malloc_trim` returns."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


Reconcile = Callable[[str, str], None]
"""reconcile_by_name(namespace, name): blocking, run in a thread."""


class ReconcileQueue:
    """Pools waiting for a reconcile, in the order first asked for, run by `workers` tasks."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pending: dict[PoolKey, None] = {}
        """An ordered set: the pools asked for and not started yet."""
        self._running: set[PoolKey] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._since_release = 0
        self._idle_release: asyncio.TimerHandle | None = None

    def request(self, key: PoolKey, reconcile: Reconcile) -> None:
        """Reconcile the pool soon. Called on the event loop; starts the workers on first use (from a
        handler, so that they inherit the context kopf gives handlers: Events need it)."""
        self._pending[key] = None
        self._wake.set()
        if not self._tasks:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="reconcile")
            self._tasks = [
                asyncio.create_task(self._work(reconcile), name=f"reconcile worker {index}")
                for index in range(self.workers)
            ]

    def forget(self, key: PoolKey) -> None:
        """The pool is gone: a reconcile not started yet is not needed any more."""
        self._pending.pop(key, None)

    def __len__(self) -> int:
        """Pools waiting (not counting those being reconciled)."""
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """No pool waits and none is being reconciled."""
        return not self._pending and not self._running

    def _next(self) -> PoolKey | None:
        for key in self._pending:
            if key not in self._running:
                del self._pending[key]
                return key
        return None

    async def _work(self, reconcile: Reconcile) -> None:
        while True:
            key = self._next()
            if key is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._running.add(key)
            if self._idle_release is not None:
                self._idle_release.cancel()
                self._idle_release = None
            try:
                context = contextvars.copy_context()  # as asyncio.to_thread, on threads of our own
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, functools.partial(context.run, reconcile, *key)
                )
            except Exception:
                logger.exception("reconciling %s/%s failed; retried later", *key)
            finally:
                self._running.discard(key)
                if key in self._pending:
                    self._wake.set()
                self._after_reconcile()

    def _after_reconcile(self) -> None:
        """Release memory every RELEASE_EVERY reconciles, and once the queue has been idle a while."""
        self._since_release += 1
        if self._since_release >= RELEASE_EVERY:
            self._release()
        elif not self._pending and not self._running and self._idle_release is None:
            self._idle_release = asyncio.get_running_loop().call_later(
                RELEASE_AFTER_IDLE_SECONDS, self._release
            )

    def _release(self) -> None:
        self._since_release = 0
        if self._idle_release is not None:
            self._idle_release.cancel()
            self._idle_release = None
        release_memory()

    async def stop(self) -> None:
        if self._idle_release is not None:
            self._idle_release.cancel()
            self._idle_release = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()
        self._running.clear()
        self._wake = asyncio.Event()  # not bound to a loop that is gone
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
