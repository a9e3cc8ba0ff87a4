"""The worker's side of the pool's circuit breaker: how many jobs it may take now.

The operator decides the state and writes it to the pool's policies ConfigMap, key `breaker.json`,
which the kubelet updates in the mounted volume; the worker reads it again at most once a second.
Open: take nothing (jobs held are finished and settled as usual; nothing is dead-lettered for the
breaker). HalfOpen: take up to `probeJobs` jobs per half-open period (a new `since` starts a new one).
Closed, or no file: take what the concurrency allows. Readiness does not change: a worker held back
by the breaker is healthy, and restarting or unrouting it would help nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("workerfleet.worker")

READ_EVERY_SECONDS = 1.0
OPEN = "Open"
HALF_OPEN = "HalfOpen"


@dataclass(frozen=True)
class BreakerView:
    """The breaker as the worker last read it."""

    state: str = "Closed"
    since: str = ""
    probe_jobs: int = 0


def parse_breaker(text: str) -> BreakerView:
    """The state in breaker.json; ValueError when it is not one."""
    body = json.loads(text)
    if not isinstance(body, dict) or not isinstance(body.get("state"), str):
        raise ValueError("breaker.json holds no state")
    return BreakerView(str(body["state"]), str(body.get("since", "")), int(body.get("probeJobs", 0)))


class BreakerGate:
    """Caps each receive by the breaker's state, counting the probe jobs taken while half-open."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._view = BreakerView()
        self._read_at: float | None = None
        self._probe_period = ""
        self._probes_taken = 0

    def allowance(self, free: int) -> int:
        """How many of `free` slots may be filled now."""
        view = self._current()
        if view.state == OPEN:
            return 0
        if view.state == HALF_OPEN:
            if view.since != self._probe_period:
                self._probe_period, self._probes_taken = view.since, 0
            return max(min(free, view.probe_jobs - self._probes_taken), 0)
        return free

    def took(self, count: int) -> None:
        """`count` jobs were received under the current allowance."""
        if self._view.state == HALF_OPEN:
            self._probes_taken += count

    def _current(self) -> BreakerView:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < READ_EVERY_SECONDS:
            return self._view
        self._read_at = now
        try:
            view = parse_breaker(self._path.read_text())
        except FileNotFoundError:
            view = BreakerView()
        except (OSError, ValueError) as error:
            # Half-written or broken: keep the last state read rather than guess.
            log.warning("cannot read the breaker state; keeping the last one", extra={"error": str(error)})
            return self._view
        if view.state != self._view.state:
            log.info("circuit breaker state changed", extra={"state": view.state, "since": view.since})
        self._view = view
        return view
