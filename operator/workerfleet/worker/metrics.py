"""Prometheus metrics of one worker process, labelled with its pool and revision so canary analysis can
compare the canary's outcomes with the stable revision's on the same queue."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from workerfleet.api.worker_contract import (
    FAILURES_METRIC,
    JOB_DURATION_METRIC,
    JOBS_IN_FLIGHT_METRIC,
    JOBS_METRIC,
    WORKER_START_TIME_METRIC,
    Outcome,
)

UNSERVED_JOB_TYPE = ""
"""The job_type label of every job whose type the pool does not serve, or that is no envelope at all: one
series for all of them, so a producer's stray or random types cannot grow the metrics without bound."""

DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)


class WorkerMetrics:
    """The worker's metrics in a registry of their own (so tests can run several side by side)."""

    def __init__(self, pool: str, revision: str, job_types: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self._pool = pool
        self._revision = revision
        self.jobs = Counter(
            JOBS_METRIC,
            "Deliveries of jobs by how they ended: succeeded, retried, dead_lettered, failed (dropped, no "
            "dead-letter queue), expired, duplicate, review.",
            ["pool", "revision", "job_type", "outcome"],
            registry=self.registry,
        )
        # Every outcome series exists at 0 from the first scrape: a counter that first appears at 1
        # shows no increase, so a new canary pod's first failure would be lost to the analysis.
        for job_type in job_types:
            for outcome in Outcome:
                self.jobs.labels(pool, revision, job_type, outcome.value)
        # Created on the first failure of each class: only the operator's breaker reads it, from
        # each worker directly, counting a series it has not seen before from zero.
        self.failures = Counter(
            FAILURES_METRIC,
            "Deliveries whose attempt failed, by how they ended and the failure class (transient, timeout,"
            " validation, policy, unknown); failures without a class are left out.",
            ["pool", "revision", "job_type", "outcome", "failure_class"],
            registry=self.registry,
        )
        self.duration = Histogram(
            JOB_DURATION_METRIC,
            "Time one attempt's handler ran, by how the delivery ended.",
            ["pool", "revision", "job_type", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            JOBS_IN_FLIGHT_METRIC,
            "Jobs this worker holds right now.",
            ["pool", "revision", "job_type"],
            registry=self.registry,
        )
        # A restarted container keeps its pod's scrape target, so each restart changes this series:
        # canary analysis counts the changes to see a canary that crash-loops or is OOM-killed.
        self.started = Gauge(
            WORKER_START_TIME_METRIC,
            "When this worker process started, in seconds since the epoch.",
            ["pool", "revision"],
            registry=self.registry,
        )
        self.started.labels(pool, revision).set(time.time())
        # Each job's series looked up once, not per job (labels() builds and hashes its key every call).
        # Bounded: job types a pool does not serve all count under UNSERVED_JOB_TYPE.
        self._outcome_series: dict[tuple[str, Outcome], tuple[Counter, Histogram]] = {}
        self._in_flight_series: dict[str, Gauge] = {}

    def count(self, job_type: str, outcome: Outcome, handler_seconds: float | None) -> None:
        """One delivery ended; `handler_seconds` is set when its handler ran."""
        key = (job_type, outcome)
        series = self._outcome_series.get(key)
        if series is None:
            labels = (self._pool, self._revision, job_type, outcome.value)
            series = self._outcome_series[key] = (self.jobs.labels(*labels), self.duration.labels(*labels))
        series[0].inc()
        if handler_seconds is not None:
            series[1].observe(handler_seconds)

    def count_failure(self, job_type: str, outcome: Outcome, failure_class: str) -> None:
        """A delivery ended with an attempt that failed with `failure_class`."""
        self.failures.labels(self._pool, self._revision, job_type, outcome.value, failure_class).inc()

    def in_flight_gauge(self, job_type: str) -> Gauge:
        gauge = self._in_flight_series.get(job_type)
        if gauge is None:
            gauge = self._in_flight_series[job_type] = self.in_flight.labels(
                self._pool, self._revision, job_type
            )
        return gauge
