"""A Prometheus on loopback that answers too much, too deep, too slowly or never: the pool's read fails
with a reason naming the bound, and the operator reads no more than the bound."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Analysis, PrometheusQueue
from workerfleet.backends.analysis import PrometheusAnalysis
from workerfleet.backends.base import QueueUnreachableError
from workerfleet.backends.bounds import MAX_ANSWER_BYTES, MAX_ANSWER_NESTING, BoundReason
from workerfleet.backends.prometheus import PrometheusDepth

HUGE_BYTES = 64 * MAX_ANSWER_BYTES
CHUNK = b" " * 65536


class HostilePrometheus(ThreadingHTTPServer):
    """Answers every query the way `behaviour` says; counts the bytes it managed to send."""

    daemon_threads = True

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sent = 0
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with contextlib.suppress(OSError):  # the operator hung up: what the bounds are for
                    server.answer(self)

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        if self.behaviour == "never":
            self.stopping.wait(30)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if self.behaviour == "nested":
            body = b"[" * 200_000 + b"]" * 200_000
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            self.sent += len(body)
            return
        handler.end_headers()  # no Content-Length: the size shows only while reading
        if self.behaviour == "oversized":
            handler.wfile.write(b'{"status": "success", "data": {"resultType": "vector", "result": []}}')
            while self.sent < HUGE_BYTES and not self.stopping.is_set():
                handler.wfile.write(CHUNK)
                self.sent += len(CHUNK)
        elif self.behaviour == "slow":
            for byte in b'{"status": "success", "data": {"resultType": "vector", "result": []}}':
                if self.stopping.wait(0.5):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()


@pytest.fixture
def hostile() -> Iterator[Any]:
    started: list[HostilePrometheus] = []

    def start(behaviour: str) -> HostilePrometheus:
        server = HostilePrometheus(behaviour)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def _read_depth(address: str) -> QueueUnreachableError:
    source = PrometheusDepth(
        PrometheusQueue.model_validate({"address": address, "query": "sum(queue_depth)"}), Credentials()
    )

    async def read() -> QueueUnreachableError:
        try:
            await source.read()
        except QueueUnreachableError as error:
            return error
        finally:
            await source.close()
        raise AssertionError("the read succeeded")

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("behaviour", "reason", "words"),
    [
        ("oversized", BoundReason.TOO_LARGE, f"larger than {MAX_ANSWER_BYTES // 1024} KiB"),
        ("nested", BoundReason.TOO_DEEP, f"nested deeper than {MAX_ANSWER_NESTING} levels"),
        ("slow", BoundReason.TIMED_OUT, "no complete answer within 5s"),
        ("never", BoundReason.TIMED_OUT, "no complete answer within 5s"),
    ],
)
def test_a_depth_read_past_a_bound_fails_with_the_bound_as_reason(
    hostile: Any, behaviour: str, reason: str, words: str
) -> None:
    server = hostile(behaviour)
    started = time.monotonic()
    error = _read_depth(server.address)
    assert (error.reason, words in str(error)) == (reason, True), str(error)
    assert time.monotonic() - started < 8
    if behaviour == "oversized":  # the rest was never read: the server could not send it all
        assert server.sent < HUGE_BYTES / 2, server.sent


@pytest.mark.parametrize("behaviour", ["oversized", "nested", "never"])
def test_a_canary_analysis_past_a_bound_is_an_analysis_error_naming_it(hostile: Any, behaviour: str) -> None:
    server = hostile(behaviour)
    analysis = Analysis.model_validate(
        {"maxErrorRate": 0.1, "intervalSeconds": 15, "prometheus": {"address": server.address}}
    )
    provider = PrometheusAnalysis(analysis, Credentials(), pool="thumbs", namespace="media")

    async def measure() -> Any:
        try:
            return await provider.measure("new", "old", 15)
        finally:
            await provider.close()

    measurement = asyncio.run(measure())
    assert measurement.error is not None
    assert "the operator's bound" in measurement.error, measurement.error
