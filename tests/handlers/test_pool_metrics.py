from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from workerfleet.handlers.pool_metrics import PoolMetrics, shown_status


def _scrape(metrics: PoolMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(metrics)
    return generate_latest(registry).decode()


def test_status_becomes_gauges_the_alerts_use() -> None:
    metrics = PoolMetrics()
    status = {
        "replicas": 3,
        "queue": {"depth": 118},
        "conditions": [{"type": "Fallback", "status": "True", "reason": "FallbackActive"}],
    }
    metrics.observe("media", "thumbs", status)
    metrics.observe_deadline("media", "thumbs", 600)
    metrics.observe_queue("media", "thumbs", 120, 42.5, datetime(2026, 1, 1, tzinfo=UTC))

    text = _scrape(metrics)

    assert 'workerfleet_queue_depth{namespace="media",pool="thumbs"} 120.0' in text
    assert 'workerfleet_queue_oldest_age_seconds{namespace="media",pool="thumbs"} 42.5' in text
    assert 'workerfleet_job_deadline_seconds{namespace="media",pool="thumbs"} 600.0' in text
    assert (
        'workerfleet_queue_last_poll_timestamp_seconds{namespace="media",pool="thumbs"} 1.7672256e+09' in text
    )
    assert 'workerfleet_pool_replicas{namespace="media",pool="thumbs"} 3.0' in text
    assert (
        'workerfleet_pool_condition{condition="Fallback",namespace="media",pool="thumbs",'
        'reason="FallbackActive",status="True"} 1.0'
    ) in text


def test_the_depth_in_status_stands_in_until_this_replica_reads_the_queue() -> None:
    metrics = PoolMetrics()
    metrics.observe("media", "thumbs", {"queue": {"depth": 7}})
    assert 'workerfleet_queue_depth{namespace="media",pool="thumbs"} 7.0' in _scrape(metrics)
    assert "workerfleet_queue_last_poll_timestamp_seconds{" not in _scrape(metrics)


def test_a_deleted_pool_disappears_and_an_unknown_depth_is_not_reported_as_zero() -> None:
    metrics = PoolMetrics()
    metrics.observe("media", "thumbs", {"queue": {"consecutiveFailures": 2}})
    assert "workerfleet_queue_depth{" not in _scrape(metrics)
    metrics.observe_deadline("media", "thumbs", 60)
    metrics.observe_queue("media", "thumbs", 3, None, datetime(2026, 1, 1, tzinfo=UTC))
    metrics.forget("media", "thumbs")
    assert 'pool="thumbs"' not in _scrape(metrics)


def test_review_and_dead_letter_depths_come_from_status_and_the_review_age_from_the_last_read() -> None:
    metrics = PoolMetrics()
    metrics.observe("media", "thumbs", {"queue": {"reviewDepth": 4, "deadLetterDepth": 9}})
    metrics.observe_held("media", "thumbs", 3600.0)
    text = _scrape(metrics)
    assert 'workerfleet_review_depth{namespace="media",pool="thumbs"} 4.0' in text
    assert 'workerfleet_dead_letter_depth{namespace="media",pool="thumbs"} 9.0' in text
    assert 'workerfleet_review_oldest_age_seconds{namespace="media",pool="thumbs"} 3600.0' in text
    # An empty review queue has no oldest job: the age goes, rather than staying at its last value
    metrics.observe_held("media", "thumbs", None)
    assert "workerfleet_review_oldest_age_seconds{" not in _scrape(metrics)


def test_only_what_the_metrics_show_of_a_status_is_kept() -> None:
    status: dict[str, Any] = {
        "replicas": 2,
        "readyReplicas": 2,
        "queue": {"depth": 4, "reviewDepth": 1, "lastPollTime": "2026-12-07T22:00:00Z"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "AsPlanned",
                "message": "every replica is ready",
                "lastTransitionTime": "2026-12-07T22:00:00Z",
            }
        ],
        "rollout": {"phase": "Stable"},
    }

    shown = shown_status(status)

    assert shown == {
        "replicas": 2,
        "queue": {"depth": 4, "reviewDepth": 1},
        "conditions": [{"type": "Ready", "status": "True", "reason": "AsPlanned"}],
    }
    assert shown["conditions"][0] is not status["conditions"][0]
    assert shown["queue"] is not status["queue"]
