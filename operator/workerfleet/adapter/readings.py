"""The latest queue reading of every pool: written by the pollers, read by the metrics API."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Reading:
    """What the metrics API serves for one pool: the value the HPA should see, when it was taken, and
    how long it may be served (a stale value is no value)."""

    value: int
    time: datetime
    lifetime_seconds: float

    def fresh(self, now: datetime) -> bool:
        return now - self.time <= timedelta(seconds=self.lifetime_seconds)


class Readings:
    """Thread-safe map of (namespace, pool) to its latest reading."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readings: dict[tuple[str, str], Reading] = {}

    def put(self, namespace: str, pool: str, reading: Reading) -> None:
        with self._lock:
            self._readings[(namespace, pool)] = reading

    def forget(self, namespace: str, pool: str) -> None:
        with self._lock:
            self._readings.pop((namespace, pool), None)

    def clear(self) -> None:
        with self._lock:
            self._readings.clear()

    def in_namespace(self, namespace: str, now: datetime) -> dict[str, Reading]:
        """The readings of the namespace's pools that are still fresh at `now`."""
        with self._lock:
            return {
                pool: reading
                for (ns, pool), reading in self._readings.items()
                if ns == namespace and reading.fresh(now)
            }
