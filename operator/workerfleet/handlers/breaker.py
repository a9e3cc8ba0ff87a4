"""Watch each pool's workers through their own metrics ports: the circuit breaker and deletion costs.

One task per pool whose workers run the workerfleet runtime and that has a breaker, autoscaling, a
rollout or more than one replica. Every scrape interval in which there is something to read for
(a breaker, a rate limit's capacity, or two workers at least, so one can be spared), it lists the
pool's ready pods, reads each at podIP:spec.worker.port, then:
- sets each pod's `controller.kubernetes.io/pod-deletion-cost` to the jobs it holds (only where it
  changed), so whoever removes replicas next (the HPA through the pool, a rollout, a person) has the
  ReplicaSet remove idle workers first;
- decides the breaker (`planners.breaker`) and writes its state to status (with the CircuitOpen
  condition), to the workers (key breaker.json of the policies ConfigMap) and as Events;
- measures what one worker can run (its concurrency over its handlers' mean time in the last minute)
  for the autoscaler's rate-limit ceiling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from workerfleet.api.base import API_VERSION
from workerfleet.api.conditions import Condition, ConditionStatus, ConditionUpdate, set_condition
from workerfleet.api.worker_contract import BREAKER_FILE
from workerfleet.api.workerpool import WorkerPoolConditionType, WorkerPoolSpec, WorkerRuntime
from workerfleet.backends.worker_scrape import WorkerScraper
from workerfleet.handlers.activity import ACTIVITY, Pools
from workerfleet.handlers.capacity import WORKER_CAPACITY
from workerfleet.handlers.pool_tasks import PoolBodies, PoolKey, PoolTasks, pool_key
from workerfleet.handlers.pool_watch import follow_pools
from workerfleet.handlers.workerpool import pool_lock, post_event
from workerfleet.kube.client import kube
from workerfleet.planners.breaker import (
    BREAKER_ACTION_ANNOTATION,
    DELETION_COST_ANNOTATION,
    HISTORY_MARGIN_SECONDS,
    BreakerReason,
    BreakerStatus,
    Scrape,
    breaker_document,
    circuit_open_condition,
    cost_patches,
    decide_breaker,
    deletion_costs,
    handler_rate_per_worker,
    scrape_interval,
    trim,
    unreadable_workers,
    worker_concurrency,
)
from workerfleet.planners.children import names, pool_selector, restricted_spec
from workerfleet.planners.status import Event

logger = logging.getLogger(__name__)

COST_FIELD_MANAGER = "workerfleet-deletion-cost"
CAPACITY_WINDOW_SECONDS = 60.0
RESTING_CHECK_SECONDS = 1.0
"""How soon a pool with nothing to read its workers for is looked at again (in memory, no request): a
rate limit's capacity needs a first scrape before the jobs it measures, soon after the limit is known."""
"""How far back a worker's handler times are averaged for what it can run."""
BREAKER_FIELD_MANAGER = "workerfleet-breaker"


def _watched(body: Mapping[str, Any]) -> bool:
    """Pools whose workers run the workerfleet runtime (only those serve the counters read here) and
    that can lose replicas or have a breaker: a fixed pool of one worker costs no reads at all."""
    spec = body.get("spec") or {}
    worker = spec.get("worker") or {}
    if worker.get("runtime", WorkerRuntime.WORKERFLEET) != WorkerRuntime.WORKERFLEET:
        return False
    has_breaker = bool(spec.get("circuitBreaker") or (body.get("status") or {}).get("circuitBreaker"))
    can_shrink = bool(spec.get("autoscaling") or spec.get("rollout")) or spec.get("replicas", 1) > 1
    return has_breaker or can_shrink


def _workers_worth_reading(body: Mapping[str, Any], capacity_wanted: bool) -> bool:
    """Whether this round reads the pool's pods and workers: for its breaker, for the capacity a rate
    limit needs, or to spare busy workers at a scale-in, which needs two workers at least. A pool
    resting at one worker (the usual idle autoscaled pool) costs no request; its status moves (and
    with it this answer) as soon as a second pod exists."""
    status = body.get("status") or {}
    if body["spec"].get("circuitBreaker") or status.get("circuitBreaker") or capacity_wanted:
        return True
    return int(status.get("replicas") or 0) > 1


def _ready_addresses(pods: list[dict[str, Any]], port: int) -> tuple[dict[str, str], dict[str, str | None]]:
    """(pod name to podIP:port of the ready pods, pod name to its current deletion cost)."""
    addresses: dict[str, str] = {}
    costs: dict[str, str | None] = {}
    for pod in pods:
        metadata, status = pod["metadata"], pod.get("status") or {}
        if metadata.get("deletionTimestamp") or not status.get("podIP"):
            continue
        conditions = status.get("conditions") or []
        ready = any(item.get("type") == "Ready" and item.get("status") == "True" for item in conditions)
        if ready:
            addresses[metadata["name"]] = f"{status['podIP']}:{port}"
            costs[metadata["name"]] = (metadata.get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    return addresses, costs


def _write_breaker(
    namespace: str, name: str, spec: WorkerPoolSpec, history: list[Scrape], unreadable: str | None
) -> list[Event]:
    """Decide the breaker on the freshest pool and write status and the workers' file when they change."""
    api = kube()
    with pool_lock(namespace, name):
        pool = api.get(API_VERSION, "WorkerPool", namespace, name)
        if pool is None or not ACTIVITY.is_active():
            return []
        status = pool.get("status") or {}
        current = BreakerStatus.from_status(status.get("circuitBreaker"))
        now = datetime.now(UTC)
        action = (pool["metadata"].get("annotations") or {}).get(BREAKER_ACTION_ANNOTATION)
        events: list[Event] = []
        decided = BreakerStatus()
        if spec.circuit_breaker is not None:
            decision = decide_breaker(spec.circuit_breaker, current, history, now, action)
            decided, events = decision.status, list(decision.events)
        document = breaker_document(spec.circuit_breaker, decided)
        api.set_config_map_key(namespace, names(name).policies, BREAKER_FILE, document, BREAKER_FIELD_MANAGER)
        previous = [Condition.model_validate(c) for c in status.get("conditions") or []]
        condition_status, reason, message = circuit_open_condition(spec.circuit_breaker, decided, unreadable)
        was = next((c for c in previous if c.type == WorkerPoolConditionType.CIRCUIT_OPEN), None)
        if reason == BreakerReason.WORKERS_UNREADABLE and (was is None or was.reason != reason):
            events.append(Event("Warning", reason, message))
        conditions = set_condition(
            previous,
            ConditionUpdate(
                type=WorkerPoolConditionType.CIRCUIT_OPEN,
                status=ConditionStatus(condition_status),
                reason=reason,
                message=message,
                observed_generation=pool["metadata"].get("generation"),
            ),
            now.replace(microsecond=0),
        )
        if spec.circuit_breaker is None:
            conditions = [c for c in conditions if c.type != WorkerPoolConditionType.CIRCUIT_OPEN]
        new_conditions = [c.to_dict() for c in conditions]
        breaker_status = None if spec.circuit_breaker is None else decided.to_status()
        changed = new_conditions != [c.to_dict() for c in previous]
        if changed or breaker_status != status.get("circuitBreaker"):
            patch = {"circuitBreaker": breaker_status, "conditions": new_conditions}
            api.patch_pool_status(namespace, name, patch)
        return events


class WorkerWatch(PoolTasks):
    """One watching task per pool whose workers run the workerfleet runtime."""

    def __init__(self) -> None:
        super().__init__()
        self._bodies = PoolBodies()
        self._worth_reading: dict[PoolKey, bool] = {}
        """Per pool, whether its body alone makes its workers worth reading: decided when the body
        comes, so a resting pool's round decodes nothing."""
        self._history: dict[PoolKey, list[Scrape]] = {}
        self._scraper = WorkerScraper()

    def update(self, body: dict[str, Any]) -> None:
        key = pool_key(body)
        if not _watched(body):
            self.stop(key)
            return
        self._bodies[key] = body
        self._worth_reading[key] = _workers_worth_reading(body, capacity_wanted=False)
        if ACTIVITY.is_active():
            self.start(key, self._watch, "workers")

    def stop(self, key: PoolKey) -> None:
        self._bodies.pop(key, None)
        self._worth_reading.pop(key, None)
        self._history.pop(key, None)
        WORKER_CAPACITY.forget(*key)
        super().stop(key)

    async def on_activity(self, active: bool, pools: Pools) -> None:
        if not active:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            self._tasks.clear()
            self._history.clear()
            await asyncio.gather(*tasks, return_exceptions=True)
            return
        current = {pool_key(pool) for pool in pools}
        for key in [key for key in self._bodies if key not in current]:
            self.stop(key)
        for pool in pools:
            if not pool["metadata"].get("deletionTimestamp"):
                self.update(pool)

    async def _watch(self, key: PoolKey) -> None:
        namespace, name = key
        while key in self._bodies and ACTIVITY.is_active():
            if not (self._worth_reading.get(key) or WORKER_CAPACITY.wanted(namespace, name)):
                self.succeeded(key)
                await asyncio.sleep(RESTING_CHECK_SECONDS)
                continue
            body = self._bodies[key]
            spec = WorkerPoolSpec.model_validate(restricted_spec(body["spec"]))
            # Not bound to a name: a listing of whole pods would otherwise live through the sleep below.
            addresses, current_costs = _ready_addresses(
                await asyncio.to_thread(kube().pods, namespace, pool_selector(name)), spec.worker.port
            )
            counters = await self._scraper.scrape(addresses)
            now = datetime.now(UTC)
            if spec.worker.spare_busy_workers:
                for pod, cost in cost_patches(deletion_costs(counters), current_costs).items():
                    annotation = {DELETION_COST_ANNOTATION: cost}
                    await asyncio.to_thread(
                        kube().annotate_pod, namespace, pod, annotation, COST_FIELD_MANAGER
                    )
            breaker = spec.circuit_breaker
            since = BreakerStatus.from_status((body.get("status") or {}).get("circuitBreaker")).since
            held_back = (now - since).total_seconds() if since and breaker else 0.0
            window = float(breaker.window_seconds) if breaker else 0.0
            keep = max(window, held_back, CAPACITY_WINDOW_SECONDS) + HISTORY_MARGIN_SECONDS
            history = trim([*self._history.get(key, []), Scrape(now, counters)], now, keep)
            self._history[key] = history
            capacity_since = now - timedelta(seconds=CAPACITY_WINDOW_SECONDS)
            concurrency = worker_concurrency(spec.template.to_dict())
            WORKER_CAPACITY.observe(
                namespace, name, handler_rate_per_worker(history, capacity_since, concurrency)
            )
            if breaker is not None or (body.get("status") or {}).get("circuitBreaker"):
                unreadable = unreadable_workers(len(addresses), len(counters), spec.worker.port)
                events = await asyncio.to_thread(_write_breaker, namespace, name, spec, history, unreadable)
                for event in events:
                    post_event(body, event)
            self.succeeded(key)
            await asyncio.sleep(scrape_interval(breaker))

    async def close(self) -> None:
        await self.stop_all()
        await self._scraper.close()


WORKER_WATCH = WorkerWatch()
follow_pools(WORKER_WATCH, WORKER_WATCH.on_activity, WORKER_WATCH.close, "worker-watch")
