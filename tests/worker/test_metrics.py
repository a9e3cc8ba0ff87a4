"""The worker's metrics as Prometheus scrapes them."""

from __future__ import annotations

from prometheus_client import generate_latest

from workerfleet.api.worker_contract import Outcome
from workerfleet.worker.metrics import WorkerMetrics


def scraped(metrics: WorkerMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_every_outcome_of_every_job_type_is_exported_at_zero_before_the_first_job() -> None:
    # Given a new worker (a new canary pod) serving two job types
    metrics = WorkerMetrics("thumbs", "rev-2", job_types=["resize", "crop"])
    # Then the first scrape already has each outcome series at 0, so increase() over the window sees
    # the first failure as a step from 0 to 1 instead of a series that starts at 1 (counted as none)
    text = scraped(metrics)
    for job_type in ("resize", "crop"):
        for outcome in Outcome:
            line = (
                f'workerfleet_jobs_total{{job_type="{job_type}",outcome="{outcome.value}",pool="thumbs",'
                f'revision="rev-2"}} 0.0'
            )
            assert line in text


def test_counting_adds_to_the_initialised_series() -> None:
    metrics = WorkerMetrics("thumbs", "rev-2", job_types=["resize"])
    metrics.count("resize", Outcome.FAILED, 0.1)
    assert (
        'workerfleet_jobs_total{job_type="resize",outcome="failed",pool="thumbs",revision="rev-2"} 1.0'
        in scraped(metrics)
    )
