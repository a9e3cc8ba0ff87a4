"""The REST client's transport against a loopback stand-in API server: retries where they are safe,
Retry-After, 401 re-resolution, bounded answers, one error type, and the User-Agent."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workerfleet import __version__
from workerfleet.kube import rest
from workerfleet.kube.credentials import ApiCredentials, CredentialSource
from workerfleet.kube.options import ClusterOptions
from workerfleet.kube.rest import ApiError, Rest, TransportError, backoff_seconds, retry_after_seconds


@dataclass
class Reply:
    status: int
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Close the connection without answering."""
    silent_seconds: float = 0.0
    """Say nothing this long first (a frozen server)."""


class StandIn(ThreadingHTTPServer):
    """Answers from a script, one reply per request (the last one repeats); records what it was sent."""

    daemon_threads = True

    def __init__(self, script: list[Reply]) -> None:
        self.script = script
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.seen.append((self.command, self.path, dict(self.headers)))
                reply = server.script[min(len(server.seen), len(server.script)) - 1]
                time.sleep(reply.silent_seconds)
                if reply.drop:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def do_PATCH(self) -> None:
                self._answer()

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def stand_in() -> Iterator[Callable[[list[Reply]], StandIn]]:
    started: list[StandIn] = []

    def start(script: list[Reply]) -> StandIn:
        server = StandIn(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@dataclass
class Client:
    rest: Rest
    waits: list[float]
    resolved: list[str]


def _client(server_url: str, *tokens: str, component: str = "operator", **extra: object) -> Client:
    """A client whose credentials resolve to the next token each time (the last one repeats)."""
    waits: list[float] = []
    resolved: list[str] = []

    def resolver(_: ClusterOptions) -> ApiCredentials:
        token = tokens[min(len(resolved), len(tokens) - 1)] if tokens else ""
        resolved.append(token)
        return ApiCredentials(server=server_url, authorization=f"Bearer {token}" if token else None, **extra)  # type: ignore[arg-type]

    source = CredentialSource(ClusterOptions(component=component), resolver=resolver)
    return Client(Rest(source=source, sleep=waits.append, jitter=lambda: 0.5), waits, resolved)


def test_a_429_storm_is_ridden_out_honouring_retry_after_and_counted(
    stand_in: Callable[[list[Reply]], StandIn],
) -> None:
    throttled = Reply(429, b'{"reason":"TooManyRequests"}', {"Retry-After": "2"})
    server = stand_in([throttled] * 4 + [Reply(200, b'{"kind":"Pod"}')])
    client = _client(server.url, "t")
    before = rest.API_RETRIES.labels("throttled")._value.get()

    assert client.rest.request("POST", "/api/v1/namespaces/a/pods", body={}) == {"kind": "Pod"}

    assert len(server.seen) == 5, "a 429 is sent again, even a POST: the server did not act on it"
    assert client.waits == [2.0 + 0.5 * rest.BACKOFF_BASE_SECONDS] * 4
    assert client.rest.retries == 4
    assert rest.API_RETRIES.labels("throttled")._value.get() - before == 4


def test_every_request_names_workerfleet_its_version_and_component(
    stand_in: Callable[[list[Reply]], StandIn],
) -> None:
    server = stand_in([Reply(200)])
    client = _client(server.url, "t", component="kubectl-workerfleet", impersonate_user="kim")

    client.rest.request("GET", "/api")

    headers = server.seen[0][2]
    assert headers["User-Agent"] == f"workerfleet/{__version__} (kubectl-workerfleet)"
    assert (headers["Authorization"], headers["Impersonate-User"]) == ("Bearer t", "kim")


def test_a_5xx_is_retried_for_a_read_and_never_for_a_create(
    stand_in: Callable[[list[Reply]], StandIn],
) -> None:
    server = stand_in([Reply(503), Reply(200, b'{"ok":true}')])
    client = _client(server.url, "t")
    assert client.rest.request("GET", "/api") == {"ok": True}
    assert len(server.seen) == 2

    server = stand_in([Reply(503), Reply(200)])
    client = _client(server.url, "t")
    with pytest.raises(ApiError) as refused:
        client.rest.request("POST", "/api/v1/namespaces/a/configmaps", body={})
    assert (refused.value.status, len(server.seen)) == (503, 1)


def test_a_dropped_connection_is_retried_for_an_apply_and_a_transport_error_for_a_create(
    stand_in: Callable[[list[Reply]], StandIn],
) -> None:
    server = stand_in([Reply(0, drop=True), Reply(200, b'{"applied":1}')])
    client = _client(server.url, "t")
    assert client.rest.request("PATCH", "/x", body={}, content_type=rest.APPLY_PATCH) == {"applied": 1}
    assert len(server.seen) == 2

    server = stand_in([Reply(0, drop=True), Reply(200)])
    client = _client(server.url, "t")
    with pytest.raises(TransportError):
        client.rest.request("POST", "/x", body={})
    assert len(server.seen) == 1


def test_a_silent_server_fails_the_call_once_without_retries(
    stand_in: Callable[[list[Reply]], StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest, "READ_TIMEOUT_SECONDS", 0.2)
    server = stand_in([Reply(200, silent_seconds=1.0)])
    client = _client(server.url, "t")

    with pytest.raises(TransportError, match=r"no answer within 0\.2 s"):
        client.rest.request("GET", "/api")

    assert (len(server.seen), client.waits) == (1, []), "a frozen server is not asked six times"


def test_an_unreachable_server_is_one_transport_error_after_bounded_attempts() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}", "t")

    with pytest.raises(TransportError) as failed:
        client.rest.request("POST", "/api/v1/namespaces/a/pods", body={})

    assert isinstance(failed.value, ApiError), "code that handles a refusal handles this too"
    assert len(client.waits) == rest.RETRY_ATTEMPTS - 1, "nothing was sent: any request may go again"
    assert max(client.waits) <= rest.BACKOFF_CAP_SECONDS


def test_a_401_resolves_the_credentials_again_once(stand_in: Callable[[list[Reply]], StandIn]) -> None:
    server = stand_in([Reply(401), Reply(200, b'{"ok":1}')])
    client = _client(server.url, "stale", "fresh")
    assert client.rest.request("GET", "/api") == {"ok": 1}
    assert [seen[2]["Authorization"] for seen in server.seen] == ["Bearer stale", "Bearer fresh"]

    server = stand_in([Reply(401)])
    client = _client(server.url, "bad")
    with pytest.raises(ApiError) as refused:
        client.rest.request("GET", "/api")
    assert (refused.value.status, len(server.seen), len(client.resolved)) == (401, 2, 2)


def test_an_answer_over_the_size_limit_is_a_transport_error(
    stand_in: Callable[[list[Reply]], StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest, "MAX_RESPONSE_BYTES", 1000)
    server = stand_in([Reply(200, b"[" + b"0," * 1000 + b"0]")])
    client = _client(server.url, "t")

    with pytest.raises(TransportError, match="1000-byte limit"):
        client.rest.request("GET", "/api")


def test_retry_after_and_backoff_are_bounded() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("86400") == rest.RETRY_AFTER_CAP_SECONDS
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:05 GMT", now) == 5.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    delays = [backoff_seconds(attempt, None, 0.999) for attempt in range(1, 12)]
    assert delays == sorted(delays)
    assert max(delays) <= rest.BACKOFF_CAP_SECONDS
    assert backoff_seconds(1, None, 0.0) == rest.BACKOFF_BASE_SECONDS / 2
