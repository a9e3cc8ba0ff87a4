"""The operator's own Kubernetes REST client: JSON in, JSON out, for the dozen kinds it touches.

The official client builds a model object per field of every response and costs tens of MiB at
import; an operator with thousands of pools needs neither. Credentials come from the official
loader (`credentials.py`); this module maps kinds to paths through discovery and sends requests over
one pooled, verified TLS connection set, with retries where they are safe, a User-Agent naming the
component, and every answer bounded in size and time.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import urllib3
from prometheus_client import Counter

from workerfleet.kube.credentials import ApiCredentials, ConfigError, CredentialSource
from workerfleet.kube.options import ClusterOptions

__all__ = ["ApiCredentials", "ApiError", "ConfigError", "KindNotServedError", "Rest", "TransportError"]

DISCOVERY_RECHECK_SECONDS = 60.0
"""How long a group-version's discovered kinds are trusted when a kind is missing from them (KEDA's,
before KEDA is installed), so a missing kind costs one discovery request a minute."""
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 30.0
"""The longest silence while a response is read."""
RESPONSE_DEADLINE_SECONDS = 60.0
"""The longest a whole response may take to arrive: a server dripping bytes cannot hold a thread."""
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""The largest response read: a list page is 500 objects, far below this."""
RETRY_ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 8.0
RETRY_AFTER_CAP_SECONDS = 30.0
"""A server's Retry-After is honoured up to this long; one attempt is at most this far from the next."""
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
APPLY_PATCH = "application/apply-patch+yaml"
"""Server-side apply sends the whole intent each time: the same request twice has the effect of one."""
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
API_RETRIES = Counter(
    "workerfleet_api_retries_total",
    "Requests to the API server sent again, by cause (throttled, server_error, connection).",
    ["reason"],
)


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP status, `message` the server's words."""

    def __init__(self, status: int, reason: str, message: str, details: Mapping[str, Any] | None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details = dict(details or {})


class TransportError(ApiError):
    """The API server could not be reached or its answer not read: every transport failure (refused or
    dropped connection, TLS, proxy, timeout, oversized response), after the retries that were safe.
    An ApiError with status 0, so code that handles a refused request handles this too."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "TransportError", message, None)


class KindNotServedError(LookupError):
    """The API server serves no such kind, e.g. KEDA's ScaledObject where KEDA is not installed."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"the API server serves no {kind} ({api_version})")
        self.kind = kind


def _decoded(data: bytes) -> Any:
    """The JSON of a response; None when there is none (some errors come as plain text)."""
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now, capped; None when absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return float(min(max(seconds, 0.0), RETRY_AFTER_CAP_SECONDS))


def backoff_seconds(attempt: int, retry_after: float | None, jitter: float) -> float:
    """Before attempt `attempt + 1`: the server's Retry-After when given, else exponential from
    BACKOFF_BASE_SECONDS, capped; `jitter` in [0, 1) spreads clients that failed together."""
    if retry_after is not None:
        return retry_after + jitter * BACKOFF_BASE_SECONDS
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** (attempt - 1))
    return ceiling / 2 + jitter * ceiling / 2


def _connection_pool(credentials: ApiCredentials, pool_size: int) -> urllib3.PoolManager:
    """Kept-alive, verified connections as the credentials say: CA, client certificate, server name,
    through a proxy (an HTTP CONNECT tunnel) when one is configured."""
    options: dict[str, Any] = {
        "maxsize": pool_size,
        "block": False,
        "ssl_context": credentials.ssl_context(),
        "timeout": urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS),
        "retries": False,
    }
    if not credentials.proxy_url:
        return urllib3.PoolManager(**options)
    proxy = urlsplit(credentials.proxy_url)
    proxy_headers = (
        urllib3.make_headers(proxy_basic_auth=f"{unquote(proxy.username)}:{unquote(proxy.password or '')}")
        if proxy.username
        else None
    )
    bare = proxy._replace(netloc=proxy.netloc.rpartition("@")[2]).geturl()
    return urllib3.ProxyManager(bare, proxy_headers=proxy_headers, **options)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives: its collection's plural name, and whether it is namespaced."""

    plural: str
    namespaced: bool


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    data: bytes
    retry_after: str | None


class _NotSentError(Exception):
    """The request never reached the server (no connection): safe to send again, whatever it is."""


class _NoAnswerError(TransportError):
    """The server took the request and then fell silent past the read timeout: a frozen server is
    not asked again at once (the caller's own retry comes later), so no request waits for six."""


class Rest:
    """Requests to one API server, over a pool of kept-alive connections.

    Idempotent requests (reads, PUT, DELETE, server-side apply) are sent again on a dropped connection
    or a 5xx (not after a read timeout: a frozen server fails the call once); every request on 429
    (the server did not act on it) and when no connection was made; up to RETRY_ATTEMPTS in all, with
    capped, jittered backoff that honours Retry-After. A 401 resolves the credentials again (an exec
    plugin runs again) and retries once.
    """

    def __init__(
        self,
        options: ClusterOptions | None = None,
        *,
        source: CredentialSource | None = None,
        pool_size: int = 10,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.source = source or CredentialSource(options or ClusterOptions())
        self.user_agent = self.source.options.user_agent
        self._pool_size = pool_size
        self._sleep = sleep
        self._jitter = jitter
        self._connections: tuple[tuple[object, ...], urllib3.PoolManager] | None = None
        self._connections_lock = threading.Lock()
        self._discovered: dict[str, tuple[dict[str, Resource], float]] = {}
        self._discovery_lock = threading.Lock()
        self.retries = 0

    def _connection(self) -> tuple[ApiCredentials, urllib3.PoolManager]:
        """The credentials in force and connections made with them: new connections when the TLS
        material (a rotated certificate or CA), the server name or the proxy changed."""
        credentials = self.source.current()
        key = (*credentials.tls_material, credentials.tls_server_name, credentials.proxy_url)
        with self._connections_lock:
            if self._connections is None or self._connections[0] != key:
                if self._connections is not None:
                    self._connections[1].clear()
                self._connections = (key, _connection_pool(credentials, self._pool_size))
            return credentials, self._connections[1]

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; the decoded JSON answer, ApiError when the server refuses, TransportError
        when it cannot be reached (after the retries that were safe)."""
        payload = None if body is None else json.dumps(body).encode()
        idempotent = method in IDEMPOTENT_METHODS or content_type == APPLY_PATCH
        authenticated_again = False
        attempt = 0
        while True:
            attempt += 1
            credentials, connections = self._connection()
            headers = urllib3.HTTPHeaderDict({"Accept": "application/json", "User-Agent": self.user_agent})
            for name, value in credentials.headers():
                headers.add(name, value)
            if payload is not None:
                headers["Content-Type"] = content_type
            url = credentials.server + path + (f"?{urlencode(query)}" if query else "")
            last = attempt >= RETRY_ATTEMPTS
            try:
                answer = self._send(connections, method, url, payload, headers)
            except _NotSentError as error:
                if last:
                    raise TransportError(f"{method} {path}: {error}") from None
                self._wait("connection", attempt, None)
                continue
            except _NoAnswerError as error:
                raise TransportError(f"{method} {path}: {error.message}") from None
            except TransportError as error:
                if last or not idempotent:
                    raise TransportError(f"{method} {path}: {error.message}") from None
                self._wait("connection", attempt, None)
                continue
            if answer.status == 401 and not authenticated_again:
                authenticated_again = True
                self.source.invalidate()
                continue
            if not last and answer.status == 429:
                self._wait("throttled", attempt, retry_after_seconds(answer.retry_after))
                continue
            if not last and idempotent and answer.status in RETRYABLE_STATUSES:
                self._wait("server_error", attempt, retry_after_seconds(answer.retry_after))
                continue
            return self._answer(answer)

    def _wait(self, reason: str, attempt: int, retry_after: float | None) -> None:
        API_RETRIES.labels(reason).inc()
        self.retries += 1
        self._sleep(backoff_seconds(attempt, retry_after, self._jitter()))

    @staticmethod
    def _answer(answer: _Answer) -> Any:
        decoded = _decoded(answer.data)
        if answer.status >= 400:
            status = decoded if isinstance(decoded, dict) else {}
            raise ApiError(
                answer.status,
                str(status.get("reason") or answer.reason or ""),
                str(status.get("message") or answer.data[:200].decode(errors="replace")),
                status.get("details"),
            )
        return decoded

    @staticmethod
    def _send(
        connections: urllib3.PoolManager,
        method: str,
        url: str,
        payload: bytes | None,
        headers: urllib3.HTTPHeaderDict,
    ) -> _Answer:
        """One attempt: the whole answer, read within RESPONSE_DEADLINE_SECONDS and MAX_RESPONSE_BYTES."""
        try:
            response = connections.request(
                method, url, body=payload, headers=headers, preload_content=False, redirect=False
            )
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as error:
            raise _NotSentError(str(error)) from None
        except urllib3.exceptions.ProxyError as error:
            raise _NotSentError(f"the proxy refused the tunnel: {error}") from None
        except urllib3.exceptions.SSLError as error:
            raise TransportError(f"TLS: {error}") from None
        except urllib3.exceptions.ReadTimeoutError:
            raise _NoAnswerError(f"no answer within {READ_TIMEOUT_SECONDS:g} s") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransportError(str(error) or type(error).__name__) from None
        try:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > MAX_RESPONSE_BYTES:
                raise TransportError(f"a {declared}-byte answer, over the {MAX_RESPONSE_BYTES}-byte limit")
            deadline = time.monotonic() + RESPONSE_DEADLINE_SECONDS
            chunks: list[bytes] = []
            size = 0
            for chunk in response.stream(64 * 1024):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise TransportError(f"an answer over the {MAX_RESPONSE_BYTES}-byte limit")
                if time.monotonic() > deadline:
                    raise TransportError(f"an answer still arriving after {RESPONSE_DEADLINE_SECONDS:g} s")
                chunks.append(chunk)
        except TransportError:
            response.close()
            raise
        except urllib3.exceptions.ReadTimeoutError:
            response.close()
            raise _NoAnswerError(f"the answer stopped for {READ_TIMEOUT_SECONDS:g} s") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            response.close()
            raise TransportError(str(error) or type(error).__name__) from None
        response.release_conn()
        return _Answer(
            response.status, response.reason or "", b"".join(chunks), response.headers.get("Retry-After")
        )

    def resource(self, api_version: str, kind: str) -> Resource:
        """The kind's resource from discovery; KindNotServedError when the server has none."""
        with self._discovery_lock:
            known, fetched = self._discovered.get(api_version, ({}, 0.0))
            if kind not in known and time.monotonic() - fetched > DISCOVERY_RECHECK_SECONDS:
                known = self._discover(api_version)
                self._discovered[api_version] = (known, time.monotonic())
        if kind not in known:
            raise KindNotServedError(api_version, kind)
        return known[kind]

    def _discover(self, api_version: str) -> dict[str, Resource]:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self.request("GET", prefix)
        except ApiError as error:
            if error.status == 404:
                return {}
            raise
        return {
            item["kind"]: Resource(item["name"], bool(item["namespaced"]))
            for item in listing.get("resources") or []
            if "/" not in item["name"]
        }

    def path(
        self, api_version: str, kind: str, namespace: str = "", name: str = "", subresource: str = ""
    ) -> str:
        """The URL path of a kind's collection, or of one object (and its subresource)."""
        resource = self.resource(api_version, kind)
        parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
        if resource.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(resource.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)
