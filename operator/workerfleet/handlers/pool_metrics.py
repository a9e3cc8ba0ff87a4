"""The operator's Prometheus metrics, read from the pools it watches, for the chart's alerts and dashboard.

Values are taken from each pool's status at scrape time (the operator already receives every status
change), so the metrics cannot drift from what `kubectl get wp` shows. What changes at every poll
(the depth as last read, the age of the oldest job, when the queue was last read) comes from the
pollers instead: it is a metric only, so that reading a queue never costs a status write.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from workerfleet.api.base import GROUP, VERSION
from workerfleet.handlers.activity import ACTIVITY, Pools
from workerfleet.handlers.tenancy import served

POOL_LABELS = ["namespace", "pool"]


@dataclass(frozen=True)
class QueueReading:
    """One successful read of a pool's queue."""

    depth: int
    oldest_age_seconds: float | None
    polled_at: float
    """Unix time."""


QUEUE_FIELDS_SHOWN = ("depth", "reviewDepth", "deadLetterDepth")
CONDITION_FIELDS_SHOWN = ("type", "status", "reason")


def shown_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """What the metrics show of a pool's status, in objects of its own: the status as an event brings
    it is part of kopf's parsed body (messages, timestamps), which a kept reference would keep whole."""
    queue = status.get("queue") or {}
    shown: dict[str, Any] = {
        "queue": {field: queue[field] for field in QUEUE_FIELDS_SHOWN if field in queue},
        "conditions": [
            {field: condition[field] for field in CONDITION_FIELDS_SHOWN if field in condition}
            for condition in status.get("conditions") or []
        ],
    }
    if "replicas" in status:
        shown["replicas"] = status["replicas"]
    return shown


class PoolMetrics(Collector):
    """The latest status of every pool and the deadline of its strictest JobType, as gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[tuple[str, str], dict[str, Any]] = {}
        self._deadlines: dict[tuple[str, str], int] = {}
        self._queues: dict[tuple[str, str], QueueReading] = {}
        self._review_ages: dict[tuple[str, str], float] = {}
        """How long the oldest review job of each pool has waited, as last read."""

    def observe(self, namespace: str, pool: str, status: Mapping[str, Any]) -> None:
        shown = shown_status(status)
        with self._lock:
            self._status[(namespace, pool)] = shown

    def observe_deadline(self, namespace: str, pool: str, deadline_seconds: int | None) -> None:
        with self._lock:
            if deadline_seconds is None:
                self._deadlines.pop((namespace, pool), None)
            else:
                self._deadlines[(namespace, pool)] = deadline_seconds

    def observe_queue(
        self, namespace: str, pool: str, depth: int, oldest_age_seconds: float | None, when: datetime
    ) -> None:
        """A successful read of the pool's queue."""
        with self._lock:
            self._queues[(namespace, pool)] = QueueReading(depth, oldest_age_seconds, when.timestamp())

    def observe_held(self, namespace: str, pool: str, review_oldest_age_seconds: float | None) -> None:
        """A read of the pool's review queues (their depths come from status)."""
        with self._lock:
            if review_oldest_age_seconds is None:
                self._review_ages.pop((namespace, pool), None)
            else:
                self._review_ages[(namespace, pool)] = review_oldest_age_seconds

    def forget(self, namespace: str, pool: str) -> None:
        with self._lock:
            self._review_ages.pop((namespace, pool), None)
            self._status.pop((namespace, pool), None)
            self._deadlines.pop((namespace, pool), None)
            self._queues.pop((namespace, pool), None)

    async def on_activity(self, active: bool, pools: Pools) -> None:
        """Only the active replica reports pools: a standby's view would go stale, and alerts fire twice."""
        with self._lock:
            self._status.clear()
            self._deadlines.clear()
            self._queues.clear()
            self._review_ages.clear()
        for pool in pools if active else []:
            metadata = pool["metadata"]
            self.observe(metadata["namespace"], metadata["name"], pool.get("status") or {})

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            statuses = dict(self._status)
            deadlines = dict(self._deadlines)
            queues = dict(self._queues)
            review_ages = dict(self._review_ages)
        depth = GaugeMetricFamily(
            "workerfleet_queue_depth", "Jobs waiting in the pool's queue.", labels=POOL_LABELS
        )
        oldest = GaugeMetricFamily(
            "workerfleet_queue_oldest_age_seconds", "Age of the oldest waiting job.", labels=POOL_LABELS
        )
        replicas = GaugeMetricFamily(
            "workerfleet_pool_replicas", "Workers the pool runs.", labels=POOL_LABELS
        )
        polled = GaugeMetricFamily(
            "workerfleet_queue_last_poll_timestamp_seconds",
            "When the pool's queue was last read successfully (Unix time): how fresh the depth is.",
            labels=POOL_LABELS,
        )
        deadline = GaugeMetricFamily(
            "workerfleet_job_deadline_seconds",
            "The strictest deadline among the pool's JobTypes.",
            labels=POOL_LABELS,
        )
        condition = GaugeMetricFamily(
            "workerfleet_pool_condition",
            "1 for each condition of the pool with its current status.",
            labels=[*POOL_LABELS, "condition", "status", "reason"],
        )
        review = GaugeMetricFamily(
            "workerfleet_review_depth",
            "Jobs waiting for a person in the pool's review queues.",
            labels=POOL_LABELS,
        )
        review_age = GaugeMetricFamily(
            "workerfleet_review_oldest_age_seconds",
            "How long the oldest job in the pool's review queues has waited for a person.",
            labels=POOL_LABELS,
        )
        dead_letters = GaugeMetricFamily(
            "workerfleet_dead_letter_depth", "Jobs in the pool's dead-letter queues.", labels=POOL_LABELS
        )
        active = GaugeMetricFamily(
            "workerfleet_operator_active",
            "1 on the operator replica that acts, 0 on a standby (kopf peering).",
        )
        active.add_metric([], 1 if ACTIVITY.is_active() else 0)
        for (namespace, pool), status in sorted(statuses.items()):
            queue = status.get("queue") or {}
            if (namespace, pool) not in queues and "depth" in queue:
                depth.add_metric([namespace, pool], queue["depth"])
            if "replicas" in status:
                replicas.add_metric([namespace, pool], status["replicas"])
            if "reviewDepth" in queue:
                review.add_metric([namespace, pool], queue["reviewDepth"])
            if "deadLetterDepth" in queue:
                dead_letters.add_metric([namespace, pool], queue["deadLetterDepth"])
            for item in status.get("conditions") or []:
                labels = [namespace, pool, item["type"], item["status"], item.get("reason", "")]
                condition.add_metric(labels, 1)
        for (namespace, pool), reading in sorted(queues.items()):
            depth.add_metric([namespace, pool], reading.depth)
            polled.add_metric([namespace, pool], reading.polled_at)
            if reading.oldest_age_seconds is not None:
                oldest.add_metric([namespace, pool], reading.oldest_age_seconds)
        for (namespace, pool), seconds in sorted(deadlines.items()):
            deadline.add_metric([namespace, pool], seconds)
        for (namespace, pool), waited in sorted(review_ages.items()):
            review_age.add_metric([namespace, pool], waited)
        yield from (
            active,
            depth,
            oldest,
            polled,
            replicas,
            deadline,
            condition,
            review,
            review_age,
            dead_letters,
        )


POOL_METRICS = PoolMetrics()
REGISTRY.register(POOL_METRICS)
ACTIVITY.listen(POOL_METRICS.on_activity)


@kopf.on.startup()
def start_metrics_endpoint(memo: kopf.Memo, **_: Any) -> None:
    port: int = memo.get("metrics_port", 0)
    if port:
        start_http_server(port, addr=memo.get("metrics_address", "127.0.0.1"))


@kopf.on.event(GROUP, VERSION, "workerpools", when=served)
async def pool_status_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    """On the event loop, not in kopf's threads: an event waiting for a thread keeps its body alive."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    if not ACTIVITY.is_active():
        return
    if type == "DELETED":
        POOL_METRICS.forget(namespace, name)
    else:
        POOL_METRICS.observe(namespace, name, body.get("status") or {})
