"""A stand-in for a Prometheus that a tenant points the operator at: on a loopback port, it answers
each instant query the way the query's text says, past one of the operator's bounds.

- `oversized`: a valid answer followed by `oversized_bytes` of padding, without a Content-Length;
- `nested`: brackets nested 200,000 deep;
- `slow`: a small answer, one byte every half second;
- `never`: the connection accepted, no answer.

Any other query gets a small, valid answer of `healthy_depth`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PADDING = b" " * 65536
NESTING = 200_000


def _answer(depth: int) -> bytes:
    sample = {"metric": {}, "value": [0, str(depth)]}
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [sample]}}).encode()


class HostilePrometheus:
    """Started with `start`, stopped with `stop` (for `devenv.servers.running`); `sent` counts the
    padding bytes the readers took."""

    def __init__(self, oversized_bytes: int = 200 * 1024 * 1024, healthy_depth: int = 0) -> None:
        self.oversized_bytes = oversized_bytes
        self.healthy_depth = healthy_depth
        self.sent = 0
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                with contextlib.suppress(OSError):  # the reader hung up: what its bounds are for
                    stand_in._answer(self, query)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def _answer(self, handler: BaseHTTPRequestHandler, query: str) -> None:
        if query == "never":
            self._stopping.wait(60)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if query == "nested":
            body = b"[" * NESTING + b"]" * NESTING
        elif query in ("oversized", "slow"):
            handler.end_headers()  # no Content-Length: the size shows only while reading
            self._stream(handler, query)
            return
        else:
            body = _answer(self.healthy_depth)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _stream(self, handler: BaseHTTPRequestHandler, query: str) -> None:
        if query == "oversized":
            handler.wfile.write(_answer(self.healthy_depth))
            written = 0
            while written < self.oversized_bytes and not self._stopping.is_set():
                handler.wfile.write(PADDING)
                written += len(PADDING)
                self.sent += len(PADDING)
            return
        for byte in _answer(self.healthy_depth):
            if self._stopping.wait(0.5):
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
