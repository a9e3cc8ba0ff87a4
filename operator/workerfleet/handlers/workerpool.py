"""Level-triggered reconciliation of WorkerPools.

Every trigger (the pool itself, a Deployment it owns, a JobType it serves) leads to the same
`reconcile`: read, plan, apply what differs, write status only when it changed. Watch-event
handlers keep no bookkeeping on the objects, so a steady state costs no writes at all.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from workerfleet.api.base import API_VERSION, GROUP, VERSION
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import WorkerPoolSpec
from workerfleet.kube.client import KindNotServedError, Kube
from workerfleet.planners.children import POOL_LABEL, PoolRef, plan_children, revision_of
from workerfleet.planners.keda import KEDA_KINDS
from workerfleet.planners.status import Event, Observation, plan_status

_kube: Kube | None = None
_kube_lock = threading.Lock()
_pool_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def kube() -> Kube:
    global _kube  # noqa: PLW0603  (one client per process, created on first use)
    with _kube_lock:
        if _kube is None:
            _kube = Kube()
        return _kube


def _error_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"


def post_event(pool: dict[str, Any], event: Event) -> None:
    kopf.event(
        kopf.Body(cast(kopf.RawBody, pool)), type=event.type, reason=event.reason, message=event.message
    )


def pool_lock(namespace: str, name: str) -> threading.Lock:
    """Serialises everything that writes one pool's status within this process."""
    return _pool_locks[(namespace, name)]


def reconcile(pool: dict[str, Any]) -> None:
    """Bring one pool's children and status in line with its spec and JobTypes."""
    metadata = pool["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    with pool_lock(namespace, name):
        _reconcile_locked(pool, kube())


def _reconcile_locked(pool: dict[str, Any], api: Kube) -> None:
    metadata = pool["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    spec = WorkerPoolSpec.model_validate(pool["spec"])
    job_types: dict[str, JobTypeSpec] = {}
    missing: list[str] = []
    invalid: dict[str, str] = {}
    for job_type in spec.job_types:
        body = api.get(API_VERSION, "JobType", namespace, job_type)
        if body is None:
            missing.append(job_type)
            continue
        try:
            job_types[job_type] = JobTypeSpec.model_validate(body["spec"])
        except ValidationError as error:
            invalid[job_type] = str(error.errors()[0]["msg"])
    apply_error = None
    if not missing and not invalid:
        plan = plan_children(PoolRef(name, namespace, metadata["uid"]), spec, job_types)
        try:
            for manifest in plan.apply:
                api.apply(manifest)
            for key in plan.delete:
                api.delete(namespace, key)
        except ApiException as error:
            apply_error = f"applying the pool's children failed: {_error_message(error)}"
        except KindNotServedError as error:
            hint = (
                "; install KEDA, or set spec.autoscaling.engine to builtin"
                if error.kind in KEDA_KINDS
                else ""
            )
            apply_error = f"applying the pool's children failed: {error}{hint}"
    # Children are left as they are while a JobType is missing: running workers keep running.
    deployment = api.get("apps/v1", "Deployment", namespace, name)
    observation = Observation(
        pool=name,
        generation=metadata.get("generation", 0),
        desired_replicas=spec.replicas,
        revision=revision_of(spec.template.to_dict()),
        deployment=deployment,
        missing_job_types=missing,
        invalid_job_types=invalid,
        apply_error=apply_error,
    )
    # Status as stored now, not as the triggering event saw it: the autoscaler writes it too.
    fresh = api.get(API_VERSION, "WorkerPool", namespace, name)
    if fresh is None:
        return
    status, events, changed = plan_status(observation, fresh.get("status"), datetime.now(UTC))
    if changed:
        api.patch_pool_status(namespace, name, status)
    for event in events:
        post_event(pool, event)


def _reconcile_by_name(namespace: str, name: str) -> None:
    pool = kube().get(API_VERSION, "WorkerPool", namespace, name)
    if pool is not None and not pool["metadata"].get("deletionTimestamp"):
        reconcile(pool)


@kopf.index(GROUP, VERSION, "workerpools")
def pools_by_job_type(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], str]:
    """Which pools serve a JobType, so a JobType change reaches exactly those pools."""
    return {(namespace or "", job_type): name for job_type in spec.get("jobTypes", [])}


@kopf.on.event(GROUP, VERSION, "workerpools")
def pool_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED" or body.metadata.get("deletionTimestamp"):
        return  # children go with the pool through their ownerReferences
    reconcile(json.loads(json.dumps(dict(body))))


@kopf.on.event("apps", "v1", "deployments", labels={POOL_LABEL: kopf.PRESENT})
def deployment_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    _reconcile_by_name(namespace or "", labels[POOL_LABEL])


@kopf.on.event(GROUP, VERSION, "jobtypes")
def job_type_changed(namespace: str | None, name: str, **kwargs: Any) -> None:
    index: kopf.Index[tuple[str, str], str] = kwargs["pools_by_job_type"]
    for pool in set(index.get((namespace or "", name), [])):
        _reconcile_by_name(namespace or "", pool)
