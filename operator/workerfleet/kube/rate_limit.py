"""A client-side limit on the operator's request rate, so no burst of changes can flood the API server.

A token bucket, as client-go's: `burst` requests may go at once, then `qps` per second on average.
The arithmetic is pure (`TokenBucket.take` is given the time); `RateLimiter` adds the clock, the lock
and the waiting for the threads that share one API client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_QPS = 100.0
DEFAULT_BURST = 200


@dataclass
class TokenBucket:
    """`burst` tokens at most, refilled at `qps` per second; a request takes one."""

    qps: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token at time `now`; return how long to wait before the request may go (0: at once)."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.qps)
        self.updated = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.qps


class RateLimiter:
    """Blocks each caller until its request fits the rate; shared by every thread of one client."""

    def __init__(
        self,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be > 0 and burst >= 1 (got qps={qps}, burst={burst})")
        self._bucket = TokenBucket(qps=qps, burst=burst, tokens=float(burst), updated=clock())
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.waited_seconds = 0.0
        """Time callers spent waiting in all, for the operator's metrics."""

    def acquire(self) -> float:
        """Wait for this caller's turn; return how long it waited."""
        with self._lock:
            wait = self._bucket.take(self._clock())
            self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)
        return wait
