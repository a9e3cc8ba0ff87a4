"""Reading workers' own metrics ports: a real worker metrics server on loopback, scraped as the
operator scrapes pods for the circuit breaker and deletion costs."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from devenv.servers import free_port
from workerfleet.api.worker_contract import Outcome
from workerfleet.backends.worker_scrape import WorkerScraper, parse_worker_metrics
from workerfleet.worker.health import Health, serve
from workerfleet.worker.metrics import WorkerMetrics


def test_outcomes_are_summed_over_job_types_and_in_flight_jobs_counted() -> None:
    metrics = WorkerMetrics("thumbs", "rev-1", ["resize", "crop"])
    metrics.count("resize", Outcome.SUCCEEDED, 0.1)
    metrics.count("crop", Outcome.SUCCEEDED, 0.1)
    metrics.count("crop", Outcome.RETRIED, 0.1)
    metrics.in_flight_gauge("resize").inc(2)
    server = serve("127.0.0.1", free_port(), metrics.registry, Health(stall_seconds=60))
    silent_port = free_port()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        scraper = WorkerScraper()

        async def scrape() -> None:
            try:
                answers = await scraper.scrape({"pod-a": address, "gone": f"127.0.0.1:{silent_port}"})
            finally:
                await scraper.close()
            assert list(answers) == ["pod-a"], "a pod that does not answer is left out"
            counters = answers["pod-a"]
            assert counters.outcomes["succeeded"] == 2
            assert counters.outcomes["retried"] == 1
            assert counters.outcomes["dead_lettered"] == 0
            assert counters.in_flight == 2

        asyncio.run(scrape())
    finally:
        server.shutdown()
        server.server_close()


def test_text_without_the_runtime_series_counts_nothing() -> None:
    counters = parse_worker_metrics("# HELP other x\n# TYPE other counter\nother_total 5\n")
    assert counters.outcomes == {}
    assert counters.in_flight == 0


def test_failures_are_read_by_outcome_and_class_summed_over_job_types() -> None:
    metrics = WorkerMetrics("thumbs", "rev-1", ["resize", "crop"])
    metrics.count_failure("resize", Outcome.RETRIED, "transient")
    metrics.count_failure("crop", Outcome.RETRIED, "transient")
    metrics.count_failure("crop", Outcome.DEAD_LETTERED, "validation")
    counters = parse_worker_metrics(generate_latest(metrics.registry).decode())
    assert counters.class_failures == {("retried", "transient"): 2, ("dead_lettered", "validation"): 1}
