"""Read the worker runtime's own metrics port: outcome counters and jobs in flight, per pod.

What the circuit breaker and the deletion costs need, without a Prometheus: the operator asks each
ready worker pod at podIP:spec.worker.port/metrics, a few at a time, each within a short timeout. A pod
that does not answer is left out of that scrape (its counters count again from its next answer).
"""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from workerfleet.api.worker_contract import (
    FAILURES_METRIC,
    JOB_DURATION_METRIC,
    JOBS_IN_FLIGHT_METRIC,
    JOBS_METRIC,
    METRICS_PATH,
)
from workerfleet.planners.breaker import WorkerCounters

SCRAPE_TIMEOUT_SECONDS = 2.0
PARALLEL_SCRAPES = 32


def parse_worker_metrics(text: str) -> WorkerCounters:
    """Sum `workerfleet_jobs_total` by outcome, `workerfleet_job_failures_total` by outcome and failure
    class, `workerfleet_jobs_in_flight` and the handler duration histogram's sum and count over job
    types."""
    outcomes: dict[str, float] = {}
    class_failures: dict[tuple[str, str], float] = {}
    in_flight = handler_seconds = handled = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == JOBS_METRIC:
                outcome = sample.labels.get("outcome", "")
                outcomes[outcome] = outcomes.get(outcome, 0.0) + sample.value
            elif sample.name == FAILURES_METRIC:
                key = (sample.labels.get("outcome", ""), sample.labels.get("failure_class", ""))
                class_failures[key] = class_failures.get(key, 0.0) + sample.value
            elif sample.name == JOBS_IN_FLIGHT_METRIC:
                in_flight += sample.value
            elif sample.name == f"{JOB_DURATION_METRIC}_sum":
                handler_seconds += sample.value
            elif sample.name == f"{JOB_DURATION_METRIC}_count":
                handled += sample.value
    return WorkerCounters(outcomes, in_flight, handler_seconds, handled, class_failures)


class WorkerScraper:
    """One HTTP session for all pods of all pools."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._limit = asyncio.Semaphore(PARALLEL_SCRAPES)

    async def _one(self, address: str) -> WorkerCounters | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS))
        async with self._limit:
            try:
                async with self._session.get(f"http://{address}{METRICS_PATH}") as response:
                    if response.status != 200:
                        return None
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return None
        try:
            return parse_worker_metrics(text)
        except ValueError:
            return None

    async def scrape(self, addresses: dict[str, str]) -> dict[str, WorkerCounters]:
        """Pod name to its counters, for the pods (name to host:port) that answered."""
        names = list(addresses)
        answers = await asyncio.gather(*(self._one(addresses[name]) for name in names))
        return {name: answer for name, answer in zip(names, answers, strict=True) if answer is not None}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
