"""The Prometheus metric provider of canary analysis, against a loopback HTTP server that answers
like Prometheus's /api/v1/query."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Analysis
from workerfleet.backends.analysis import (
    DEFAULT_ERROR_QUERY,
    DEFAULT_TOTAL_QUERY,
    RESTARTS_QUERY,
    MetricsUnavailableError,
    PrometheusAnalysis,
    render,
    value_of,
)


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, v]} for v in values]},
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (vector("12.5"), 12.5),
        (vector(), None),
        (vector("NaN"), None),
        (vector("-1"), 0.0),
        ({"status": "success", "data": {"resultType": "scalar", "result": [0, "3"]}}, 3.0),
    ],
)
def test_value_of(body: dict[str, Any], expected: float | None) -> None:
    assert value_of(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        vector("1", "2"),
        {"status": "error", "error": "parse error"},
        "not json",
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
    ],
)
def test_unusable_answers_are_errors(body: object) -> None:
    with pytest.raises(MetricsUnavailableError):
        value_of(body)


def test_default_queries_count_one_revision_of_one_pool() -> None:
    total = render(DEFAULT_TOTAL_QUERY, pool="thumbs", namespace="media", revision="abc", window_seconds=30)
    errors = render(DEFAULT_ERROR_QUERY, pool="thumbs", namespace="media", revision="abc", window_seconds=30)
    assert (
        total
        == 'sum(increase(workerfleet_jobs_total{pool="thumbs",revision="abc",outcome!~"duplicate"}[30s]))'
    )
    assert errors == (
        'sum(increase(workerfleet_jobs_total{pool="thumbs",revision="abc",'
        'outcome=~"retried|dead_lettered|failed"}[30s]))'
    )


class FakePrometheus(ThreadingHTTPServer):
    """Answers each query from a table; records the queries and headers it was sent."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)["query"][0]
                server.seen.append((query, self.headers.get("Authorization")))
                body = json.dumps(server.answers.get(query, vector())).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus({})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def analysis_at(address: str, **overrides: Any) -> Analysis:
    return Analysis.model_validate(
        {"maxErrorRate": 0.1, "intervalSeconds": 15, "prometheus": {"address": address}, **overrides}
    )


def test_measures_both_revisions_over_the_interval(prometheus: FakePrometheus) -> None:
    def q(template: str, revision: str) -> str:
        return render(template, pool="thumbs", namespace="media", revision=revision, window_seconds=15)

    prometheus.answers = {
        q(DEFAULT_TOTAL_QUERY, "new"): vector("200"),
        q(DEFAULT_ERROR_QUERY, "new"): vector("60"),
        q(DEFAULT_TOTAL_QUERY, "old"): vector("800"),
        q(RESTARTS_QUERY, "new"): vector("2"),
    }
    address = f"http://127.0.0.1:{prometheus.server_address[1]}"
    provider = PrometheusAnalysis(
        analysis_at(address), Credentials(bearer_token="t0ken"), pool="thumbs", namespace="media"
    )

    async def measure() -> Any:
        try:
            return await provider.measure("new", "old", 15)
        finally:
            await provider.close()

    measurement = asyncio.run(measure())
    assert measurement.error is None
    assert measurement.canary is not None
    assert measurement.stable is not None
    assert (measurement.canary.total, measurement.canary.errors) == (200, 60)
    assert (measurement.stable.total, measurement.stable.errors) == (800, 0)
    assert measurement.canary_restarts == 2
    assert len(prometheus.seen) == 5
    assert {header for _, header in prometheus.seen} == {"Bearer t0ken"}


def test_custom_queries_and_no_data(prometheus: FakePrometheus) -> None:
    address = f"http://127.0.0.1:{prometheus.server_address[1]}"
    settings = analysis_at(address, totalQuery='sum(jobs{app="$pool",v="$revision"})', errorQuery="vector(0)")
    provider = PrometheusAnalysis(settings, Credentials(), pool="thumbs", namespace="media")

    async def measure() -> Any:
        try:
            return await provider.measure("new", "old", 15)
        finally:
            await provider.close()

    measurement = asyncio.run(measure())
    assert (measurement.canary, measurement.stable, measurement.error) == (None, None, None)
    assert 'sum(jobs{app="thumbs",v="new"})' in [query for query, _ in prometheus.seen]


def test_an_unreachable_prometheus_is_an_error_not_an_exception() -> None:
    provider = PrometheusAnalysis(analysis_at("http://127.0.0.1:9"), Credentials(), pool="p", namespace="n")

    async def measure() -> Any:
        try:
            return await provider.measure("new", "old", 15)
        finally:
            await provider.close()

    measurement = asyncio.run(measure())
    assert measurement.error is not None
    assert "127.0.0.1:9" in measurement.error


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "error": "token=hunter2 tenant-b's series"},
        "token=hunter2 tenant-b's series",
        {"status": "success", "data": {"resultType": "token=hunter2 tenant-b's series", "result": []}},
    ],
)
def test_a_prometheus_answer_is_never_copied_into_the_error(body: object) -> None:
    with pytest.raises(MetricsUnavailableError) as raised:
        value_of(body)
    assert "hunter2" not in str(raised.value)
