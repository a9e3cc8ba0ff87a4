"""What the kubelet and Prometheus ask a worker, on one port: /metrics, /healthz and /readyz.

/healthz answers 200 while the consume loop is alive: it beats on every turn (a turn lasts at most a
receive's wait, a capacity wait or a reconnect delay), so a loop that stops turning (an async handler
blocking the event loop, a receive that never returns) turns it 503 once the last beat is older than
the stall limit, and the liveness probe restarts the container. It also turns 503 when the loop turns but
cannot take jobs: receiving has failed with unexpected errors for longer than the stall limit, or jobs an
unexpected error left claimed hold as many slots as the concurrency (on RabbitMQ, the prefetch). While
draining it stays 200: the pod is on its way out already, and a restart would cut the drain short.

/readyz answers 200 while the worker is connected to its queue with its policies loaded, and 503 before
the first connection, while the queue is unreachable, while receiving fails and while draining.

The server runs in a daemon thread, so it answers even while the event loop is stuck.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from workerfleet.api.worker_contract import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH


class Health:
    """The runtime's liveness beat and readiness, shared with the probe server's thread."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._stall_seconds = stall_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._connected = False
        self._draining = False
        self._job_types = 0
        self._receive_failing_since: float | None = None
        self._unsettled = (0, 1)

    def beat(self) -> None:
        """The consume loop turned."""
        with self._lock:
            self._last_beat = self._clock()

    def policies_loaded(self, job_types: int) -> None:
        with self._lock:
            self._job_types = job_types

    def connected(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected

    def receiving(self, *, ok: bool) -> None:
        """Whether the last receive returned (a queue outage is `connected(False)`, not this)."""
        with self._lock:
            if ok:
                self._receive_failing_since = None
            elif self._receive_failing_since is None:
                self._receive_failing_since = self._clock()

    def left_unsettled(self, held: int, capacity: int) -> None:
        """`held` jobs stay claimed after unexpected errors, of `capacity` the worker takes at once."""
        with self._lock:
            self._unsettled = (held, capacity)

    def draining(self) -> None:
        with self._lock:
            self._draining = True

    def liveness(self) -> tuple[bool, str]:
        with self._lock:
            if self._draining:
                return True, "draining"
            silent = self._clock() - self._last_beat
            since = self._receive_failing_since
            failing = self._clock() - since if since is not None else 0.0
            held, capacity = self._unsettled
        if silent > self._stall_seconds:
            return (
                False,
                f"the consume loop has not turned for {silent:.0f}s (limit {self._stall_seconds:g}s)",
            )
        if failing > self._stall_seconds:
            return False, f"receiving has failed for {failing:.0f}s (limit {self._stall_seconds:g}s)"
        if held >= capacity:
            return False, f"{held} jobs left unsettled by unexpected errors hold every slot ({capacity})"
        return True, "the consume loop is turning"

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            if self._draining:
                return False, "draining: taking no more jobs"
            if not self._connected:
                return False, "not connected to the queue"
            if self._receive_failing_since is not None:
                return False, "receiving fails"
            return True, f"connected to the queue; policies of {self._job_types} job types loaded"


def serve(address: str, port: int, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    """Serve the three paths from a daemon thread for the life of the process."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == METRICS_PATH:
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in (HEALTHZ_PATH, READYZ_PATH):
                ok, message = health.liveness() if path == HEALTHZ_PATH else health.readiness()
                self._answer(200 if ok else 503, f"{message}\n".encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would drown the job log."""

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
