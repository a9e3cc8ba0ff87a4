"""A steady stream of jobs onto a Redis list, for the canary tests and the demo's rollout act."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

from workerfleet.worker.envelope import encode, new_envelope

LIMIT_SECONDS = 240.0
"""A producer nobody stops still stops after this long."""


class SteadyProducer:
    """Pushes jobs of one type at a steady rate, in batches ten times a second, for a bounded time."""

    def __init__(
        self,
        redis_port: int,
        queue: str,
        job_type: str,
        per_second: float,
        payload: Callable[[int], dict[str, Any]] = lambda _: {},
    ) -> None:
        self._client = redis.Redis(host="127.0.0.1", port=redis_port)
        self._queue = queue
        self._job_type = job_type
        self._per_second = per_second
        self._payload = payload
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.pushed = 0

    def _run(self) -> None:
        deadline = time.monotonic() + LIMIT_SECONDS
        batch = max(1, round(self._per_second / 10))
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = datetime.now(UTC)
            bodies = [
                encode(new_envelope(self._job_type, self._payload(self.pushed + n), now=now))
                for n in range(batch)
            ]
            self._client.lpush(self._queue, *bodies)
            self.pushed += batch
            self._stop.wait(batch / self._per_second)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()
