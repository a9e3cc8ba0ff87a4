"""Canary analysis metrics from Prometheus: finished and failed attempts of one revision over a window.

The queries count the worker runtime's `workerfleet_jobs_total` by pool and revision; a pool can
replace them (spec.rollout.canary.analysis.errorQuery / totalQuery) with `$pool`, `$revision`,
`$namespace` and `$window` filled in. An empty result means no data, never zero jobs.
"""

from __future__ import annotations

import asyncio
import math
from string import Template
from typing import Protocol

from workerfleet.api.base import MAX_COUNT
from workerfleet.api.credentials import Credentials
from workerfleet.api.worker_contract import (
    ERROR_OUTCOMES,
    JOBS_METRIC,
    UNCOUNTED_OUTCOMES,
    WORKER_START_TIME_METRIC,
)
from workerfleet.api.workerpool import Analysis
from workerfleet.backends.prometheus_http import PrometheusClient, PrometheusError, single_sample
from workerfleet.planners.rollout import Measurement, RevisionSample

DEFAULT_ERROR_QUERY = (
    f'sum(increase({JOBS_METRIC}{{pool="$pool",revision="$revision",outcome=~"{"|".join(ERROR_OUTCOMES)}"}}'
    "[$window]))"
)
DEFAULT_TOTAL_QUERY = (
    f'sum(increase({JOBS_METRIC}{{pool="$pool",revision="$revision",outcome!~"{"|".join(UNCOUNTED_OUTCOMES)}"}}'
    "[$window]))"
)

RESTARTS_QUERY = f'sum(changes({WORKER_START_TIME_METRIC}{{pool="$pool",revision="$revision"}}[$window]))'
"""Restarts of one revision's workers: a restarted container keeps its scrape target, so its start
time series changes once per restart."""


class MetricsUnavailableError(RuntimeError):
    """Prometheus could not be asked, or gave an answer that is not one number."""


class MetricProvider(Protocol):
    """Reads one analysis window of both revisions."""

    async def measure(
        self, canary_revision: str, stable_revision: str, window_seconds: int
    ) -> Measurement: ...

    async def close(self) -> None: ...


def value_of(body: object) -> float | None:
    """The single number of an instant query's answer; None for an empty vector (no data)."""
    try:
        number = single_sample(body)
    except PrometheusError as error:
        raise MetricsUnavailableError(str(error)) from None
    if number is None or math.isnan(number):
        return None
    if number > MAX_COUNT:
        raise MetricsUnavailableError(f"query returned {number:g}: not a count of jobs (at most 2^53 - 1)")
    return max(number, 0.0)


def render(query: str, *, pool: str, namespace: str, revision: str, window_seconds: int) -> str:
    return Template(query).safe_substitute(
        pool=pool, namespace=namespace, revision=revision, window=f"{window_seconds}s"
    )


class PrometheusAnalysis:
    """A MetricProvider over the Prometheus HTTP API (GET /api/v1/query)."""

    def __init__(self, analysis: Analysis, credentials: Credentials, *, pool: str, namespace: str) -> None:
        self._analysis = analysis
        self._pool, self._namespace = pool, namespace
        self._client = PrometheusClient(analysis.prometheus, credentials)

    async def _query(self, query: str) -> float | None:
        try:
            body = await self._client.query(query)
        except PrometheusError as error:
            raise MetricsUnavailableError(str(error)) from error
        return value_of(body)

    def _render(self, query: str, revision: str, window_seconds: int) -> str:
        return render(
            query,
            pool=self._pool,
            namespace=self._namespace,
            revision=revision,
            window_seconds=window_seconds,
        )

    async def _sample(self, revision: str, window_seconds: int) -> RevisionSample | None:
        queries = [
            self._render(query, revision, window_seconds)
            for query in (
                self._analysis.total_query or DEFAULT_TOTAL_QUERY,
                self._analysis.error_query or DEFAULT_ERROR_QUERY,
            )
        ]
        total, errors = await asyncio.gather(*(self._query(query) for query in queries))
        if total is None:
            return None
        return RevisionSample(total=total, errors=errors or 0.0)

    async def measure(self, canary_revision: str, stable_revision: str, window_seconds: int) -> Measurement:
        try:
            canary, stable, restarts = await asyncio.gather(
                self._sample(canary_revision, window_seconds),
                self._sample(stable_revision, window_seconds),
                self._query(self._render(RESTARTS_QUERY, canary_revision, window_seconds)),
            )
        except MetricsUnavailableError as error:
            return Measurement(canary=None, stable=None, error=str(error))
        return Measurement(canary=canary, stable=stable, canary_restarts=restarts)

    async def close(self) -> None:
        await self._client.close()
