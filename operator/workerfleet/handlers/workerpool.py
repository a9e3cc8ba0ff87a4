"""Level-triggered reconciliation of WorkerPools.

Every trigger (the pool itself, a Deployment it owns, a JobType it serves) leads to the same
`reconcile`: read, plan, apply what differs, write status only when it changed. Watch-event
handlers keep no bookkeeping on the objects, so a steady state costs no writes at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from workerfleet.api.base import API_VERSION, GROUP, VERSION
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import Autoscaling, AutoscalingEngine, WorkerPoolSpec
from workerfleet.handlers.activity import ACTIVITY, Pools
from workerfleet.handlers.admission import admission_problem
from workerfleet.handlers.job_type_index import JobTypeIndex
from workerfleet.handlers.reconcile_queue import MAX_CONCURRENT_RECONCILES, ReconcileQueue
from workerfleet.handlers.resync import SCHEDULE, run_schedule
from workerfleet.handlers.tenancy import served, tenancy
from workerfleet.kube.client import Kube, NameConflictError, kube
from workerfleet.kube.rest import ApiError, KindNotServedError
from workerfleet.planners.children import (
    POOL_LABEL,
    ChildPlan,
    Manifest,
    PoolRef,
    keda_keys,
    names,
    plan_children,
    restricted_spec,
    revision_of,
    role_keys,
    worker_role,
)
from workerfleet.planners.job_type import input_schema_problem, plan_job_type_status
from workerfleet.planners.keda import KEDA_KINDS, keda_secret_names
from workerfleet.planners.ownership import controller_uid
from workerfleet.planners.permissions import describe, not_delegable
from workerfleet.planners.revocation import granted_rules, kept_rules
from workerfleet.planners.rollout import Measurement
from workerfleet.planners.scaling import ScalingReason
from workerfleet.planners.scope import Refusal, address_refusal, credentials_refusal
from workerfleet.planners.status import Event, Observation, PlannedRollout, merge_patch, plan_status
from workerfleet.planners.workers import plan_workers

logger = logging.getLogger(__name__)

_pool_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def post_event(pool: dict[str, Any], event: Event) -> None:
    if not ACTIVITY.is_active():
        return  # a standby replica writes nothing, Events included
    kopf.event(
        kopf.Body(cast(kopf.RawBody, pool)), type=event.type, reason=event.reason, message=event.message
    )


def stored_spec(pool: Mapping[str, Any]) -> dict[str, Any]:
    """The pool's spec as the models read it: a template admitted before the template rules existed
    loses what they refuse (the workers run without it), and the operator says so in its log."""
    spec = restricted_spec(pool["spec"])
    if spec != pool["spec"]:
        metadata = pool["metadata"]
        logger.warning(
            "%s/%s: the pod template asks for what workers may not have (privilege, the node, a"
            " ServiceAccount of its own, ...); the workers run without it. Fix the pool: `kubectl apply`"
            " says which field",
            metadata.get("namespace"),
            metadata.get("name"),
        )
    return spec


def pool_lock(namespace: str, name: str) -> threading.Lock:
    """Serialises everything that writes one pool's status within this process."""
    return _pool_locks[(namespace, name)]


def reconcile(pool: dict[str, Any], measurement: Measurement | None = None) -> None:
    """Bring one pool's children and status in line with its spec and JobTypes.

    `measurement` is a canary analysis window just read; only the rollout ticker passes one.
    """
    metadata = pool["metadata"]
    reconcile_by_name(metadata["namespace"], metadata["name"], measurement)


def _apply_children(
    api: Kube, plan: ChildPlan, namespace: str, uid: str, *, verify: bool
) -> tuple[str | None, str | None]:
    """Write what the plan needs written: (why applying failed, why a name is taken), None when not."""
    try:
        # Every child is checked before any is written: a taken name leaves everything untouched.
        pending = [api.check(manifest, uid, verify=verify) for manifest in plan.apply]
        for write in pending:
            if write is not None:
                api.write(write)
        for key in plan.delete:
            api.delete(namespace, key, uid)
    except NameConflictError as error:
        return None, (
            f"{error.kind} {error.name} exists and is not controlled by this pool ({error.holder}):"
            f" it was left as it is. Delete or rename that {error.kind}, or rename the pool"
        )
    except ApiError as error:
        return f"applying the pool's children failed: {error.message or error}", None
    except KindNotServedError as error:
        hint = "; install KEDA, or set spec.autoscaling.engine to builtin" if error.kind in KEDA_KINDS else ""
        return f"applying the pool's children failed: {error}{hint}", None
    return None, None


def _revoke_first(api: Kube, pool: PoolRef, granted: list[Manifest], *, verify: bool) -> str | None:
    """Take from the pool's Role every rule its JobTypes no longer grant (deleted, invalid, a permission
    dropped, beyond the ceiling), before anything else is written; why that failed, or None.

    Only takes away: a Role that already holds exactly the granted rules costs no request (the applied
    memory), and one that lacks some is left for the ordinary plan to complete."""
    try:
        if granted:
            pending = api.check(worker_role(pool, granted), pool.uid, verify=verify)
            if pending is None or pending.uid is None:
                return None  # it holds exactly what is granted, or there is no Role
            live = api.read(*pending.key)
            if live is None or controller_uid(live) != pool.uid:
                return None
            kept = kept_rules(live.get("rules") or [], granted)
            if kept is None:
                return None
        else:
            kept = []
        if kept:
            reduced = api.check(worker_role(pool, kept), pool.uid)
            if reduced is not None:
                api.write(reduced)
        else:
            for key in role_keys(pool.name):
                api.delete(pool.namespace, key, pool.uid)
    except NameConflictError:
        return None  # the name is someone else's Role: nothing of the pool's to revoke (the plan says so)
    except ApiError as error:
        return f"revoking the workers' permissions failed: {error.message or error}"
    return None


def _keda_refusal(api: Kube, namespace: str, spec: WorkerPoolSpec, scaling: Autoscaling) -> Refusal | None:
    """Why KEDA may not be given the pool's queue, as the built-in engine would not contact it: an
    address off the allowlist (then no Secret is looked at), or a Secret its TriggerAuthentication
    would name that the operator may not read (the namespace did not opt in); None when it may."""
    settings = tenancy()
    refusal = address_refusal(spec.queue, settings.queue_addresses, settings.prometheus_addresses)
    if refusal is not None:
        return refusal
    secrets = keda_secret_names(spec.queue, scaling)
    readable = {secret: api.secret_readable(namespace, secret) for secret in secrets}
    return credentials_refusal(namespace, secrets, readable, settings.queue_credentials_role)


def _withhold_from_keda(api: Kube, pool: PoolRef, spec: WorkerPoolSpec) -> tuple[Refusal | None, str | None]:
    """In KEDA mode, whether or not the rest can be applied: why KEDA may not be given the queue, its
    objects then deleted; and why deleting them failed. (None, None) when it may, or not in KEDA mode."""
    scaling = spec.autoscaling
    if scaling is None or scaling.engine != AutoscalingEngine.KEDA:
        return None, None
    refusal = _keda_refusal(api, pool.namespace, spec, scaling)
    if refusal is None:
        return None, None
    try:
        for key in keda_keys(pool.name):
            api.delete(pool.namespace, key, pool.uid)
    except ApiError as error:
        return refusal, f"deleting the pool's KEDA objects failed: {error.message or error}"
    return refusal, None


def _take_away_first(
    api: Kube, pool: PoolRef, spec: WorkerPoolSpec, granted: list[Manifest], *, verify: bool
) -> tuple[Refusal | None, str | None]:
    """What `_revoke_first` and `_withhold_from_keda` do: KEDA's refusal, and why taking away failed."""
    revoke_error = _revoke_first(api, pool, granted, verify=verify)
    refusal, withhold_error = _withhold_from_keda(api, pool, spec)
    return refusal, withhold_error or revoke_error


def _awaits_opt_in(refusal: Refusal | None) -> bool:
    """KEDA was refused a Secret: retried with backoff, since the opt-in is a RoleBinding no watch brings."""
    return refusal is not None and refusal[0] == ScalingReason.CREDENTIALS_NOT_GRANTED


def _reconcile_locked(
    namespace: str, name: str, api: Kube, measurement: Measurement | None, *, verify: bool = False
) -> bool:
    """One reconcile; False when it must be retried (a child could not be applied, a permission not
    revoked, or KEDA refused a Secret: the namespace's opt-in is a RoleBinding, which no watch brings).
    A missing or invalid JobType is not retried: the JobType's own watch event brings the pool back."""
    # The pool as stored now, not as the triggering event saw it: the autoscaler writes status too.
    pool = api.get(API_VERSION, "WorkerPool", namespace, name)
    if pool is None or pool["metadata"].get("deletionTimestamp"):
        return True
    metadata = pool["metadata"]
    now = datetime.now(UTC).replace(microsecond=0)
    spec = WorkerPoolSpec.model_validate(stored_spec(pool))
    current = pool.get("status") or {}
    job_types: dict[str, JobTypeSpec] = {}
    missing: list[str] = []
    invalid: dict[str, str] = {}
    for job_type in spec.job_types:
        body = api.get(API_VERSION, "JobType", namespace, job_type)
        if body is None:
            missing.append(job_type)
            continue
        try:
            job_type_spec = JobTypeSpec.model_validate(body["spec"])
        except ValidationError as error:
            invalid[job_type] = str(error.errors()[0]["msg"])
            continue
        problem = input_schema_problem(job_type_spec)
        if problem is not None:
            invalid[job_type] = problem
            continue
        job_types[job_type] = job_type_spec
    ceiling = tenancy().delegable
    refused = [
        describe(refusal)
        for refusal in not_delegable(
            {name: job_type.permissions for name, job_type in job_types.items()}, ceiling
        )
    ]
    pool_ref = PoolRef(name, namespace, metadata["uid"])
    # Before anything else, whether or not the rest can be applied: workers lose what is no longer
    # granted, and KEDA an address or a Secret it may not be given.
    queue_refusal, apply_error = _take_away_first(
        api, pool_ref, spec, granted_rules(job_types, ceiling), verify=verify
    )
    name_conflict = None
    stable_revision = current.get("stableRevision") or revision_of(spec.template.to_dict())
    desired_stable = spec.replicas
    planned_rollout: PlannedRollout | None = None
    rollout_events: list[Event] = []
    # Without the admission policy nothing vouches for the pool's author: write no child at all.
    unguarded = admission_problem(api)
    if unguarded is None and not missing and not invalid and not refused and apply_error is None:
        stable_live = api.get("apps/v1", "Deployment", namespace, name)
        canary_live = api.get("apps/v1", "Deployment", namespace, names(name).canary)
        workers, rollout = plan_workers(
            pool, spec, stable_live, canary_live, measurement=measurement, now=now
        )
        stable_revision, desired_stable = rollout.stable_revision, rollout.stable_replicas
        planned_rollout = PlannedRollout(rollout.stable_revision, rollout.canary_revision, rollout.rollout)
        rollout_events = rollout.events
        plan = plan_children(pool_ref, spec, job_types, workers, keda_refused=queue_refusal is not None)
        apply_error, name_conflict = _apply_children(api, plan, namespace, metadata["uid"], verify=verify)
        if apply_error is not None or name_conflict is not None:
            planned_rollout, rollout_events = (
                None,
                [],
            )  # not done, so not recorded: the next reconcile retries
    # Children but the Role are left as they are while a JobType is missing, invalid or refused: running
    # workers keep running, with only what is still granted.
    observation = Observation(
        pool=name,
        generation=metadata.get("generation", 0),
        desired_replicas=desired_stable,
        revision=stable_revision,
        deployment=api.get("apps/v1", "Deployment", namespace, name),
        missing_job_types=missing,
        invalid_job_types=invalid,
        refused_permissions=refused,
        admission_policy_missing=unguarded,
        apply_error=apply_error,
        name_conflict=name_conflict,
        canary_deployment=api.get("apps/v1", "Deployment", namespace, names(name).canary),
        rollout=planned_rollout,
        scaled_by_keda=spec.autoscaling is not None and spec.autoscaling.engine == AutoscalingEngine.KEDA,
        queue_refusal=queue_refusal,
    )
    status, events, changed = plan_status(observation, current, now)
    if changed:
        api.patch_pool_status(namespace, name, merge_patch(current, status))
    for event in [*rollout_events, *events]:
        post_event(pool, event)
    return apply_error is None and name_conflict is None and not _awaits_opt_in(queue_refusal)


def reconcile_by_name(
    namespace: str, name: str, measurement: Measurement | None = None, *, verify: bool = False
) -> None:
    """Reconcile one pool, on the active replica only (a standby's kopf is paused, its clocks stopped).

    A reconcile that fails (an exception, or a child not applied) is retried with backoff by the
    resync schedule; `verify` (the periodic resync) reads every child instead of trusting memory.
    """
    if not ACTIVITY.is_active():
        return
    key = (namespace, name)
    settled = False
    try:
        with pool_lock(namespace, name):
            settled = _reconcile_locked(namespace, name, kube(), measurement, verify=verify)
    finally:
        if settled:
            SCHEDULE.succeeded(key)
        else:
            SCHEDULE.failed(key)


async def _catch_up(active: bool, pools: Pools) -> None:
    """On turning active: reconcile every pool, whatever happened to them while on standby."""
    if not active:
        return
    api = kube()
    api.watched.clear()  # kopf's handling was paused on standby: what it did not deliver is unknown
    api.applied.clear()
    for pool in pools:
        metadata = pool["metadata"]
        try:
            await asyncio.to_thread(reconcile_by_name, metadata["namespace"], metadata["name"])
        except Exception:
            logger.exception("catching up on %s/%s failed", metadata["namespace"], metadata["name"])


ACTIVITY.listen(_catch_up)


_resync_task: asyncio.Task[None] | None = None


@kopf.on.startup()
def configure_resyncs(memo: kopf.Memo, **_: Any) -> None:
    SCHEDULE.period = float(memo.get("resync_seconds", SCHEDULE.period))


@kopf.on.event(GROUP, VERSION, "workerpools")
async def start_resyncs(**_: Any) -> None:
    """Retry failed reconciles and resync every pool periodically (--resync-period).

    Started by the first pool event rather than at start-up: the Events a reconcile posts need the
    context kopf sets up for its handlers, which a task inherits from where it was created.
    """
    global _resync_task  # noqa: PLW0603  (one task per process)
    if _resync_task is None:
        _resync_task = asyncio.create_task(run_schedule(SCHEDULE, reconcile_by_name), name="resync")


@kopf.on.cleanup()
async def stop_resyncs(**_: Any) -> None:
    global _resync_task
    task, _resync_task = _resync_task, None
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await RECONCILES.stop()


POOLS_BY_JOB_TYPE = JobTypeIndex()
RECONCILES = ReconcileQueue(MAX_CONCURRENT_RECONCILES)


def _remember(body: kopf.Body, type: str | None) -> None:
    """Keep what the watch shows, so reconciles read it without a request."""
    if type == "DELETED":
        kube().watched.remember_deleted(body)
    else:
        kube().watched.remember(body)


@kopf.on.event(GROUP, VERSION, "workerpools", when=served)
async def pool_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Remember the pool and queue its reconcile; returns at once, so kopf lets go of the body."""
    metadata = body.metadata
    namespace, name = metadata.namespace or "", metadata.name or ""
    _remember(body, type)
    if type == "DELETED":
        POOLS_BY_JOB_TYPE.forget(namespace, name)
        SCHEDULE.forget((namespace, name))
        RECONCILES.forget((namespace, name))
        # Its children go with it through their ownerReferences: nothing of them is worth remembering.
        child_names = {name, *names(name).all(), f"{name}-queue"}  # -queue: KEDA's TriggerAuthentication
        kube().watched.forget_named(namespace, child_names)
        kube().applied.forget_named(namespace, child_names)
        return
    POOLS_BY_JOB_TYPE.update(namespace, name, body.spec.get("jobTypes", []))
    SCHEDULE.track((namespace, name))
    if metadata.get("deletionTimestamp"):
        return
    RECONCILES.request((namespace, name), reconcile_by_name)


@kopf.on.event("apps", "v1", "deployments", labels={POOL_LABEL: kopf.PRESENT}, when=served)
async def deployment_changed(
    body: kopf.Body, type: str | None, namespace: str | None, labels: kopf.Labels, **_: Any
) -> None:
    _remember(body, type)
    RECONCILES.request((namespace or "", labels[POOL_LABEL]), reconcile_by_name)


def judge_job_type(body: Mapping[str, Any]) -> None:
    """Write the JobType's Accepted condition when it changed, with an Event when it turns False."""
    if not ACTIVITY.is_active() or body["metadata"].get("deletionTimestamp"):
        return
    try:
        spec = JobTypeSpec.model_validate(body["spec"])
    except ValidationError:
        return  # admitted under older CRD rules: the pools that serve it report what is wrong
    problem = input_schema_problem(spec)
    metadata = body["metadata"]
    current = body.get("status") or {}
    status, events, changed = plan_job_type_status(
        metadata.get("generation", 0), problem, current, datetime.now(UTC)
    )
    if changed:
        kube().patch_job_type_status(metadata["namespace"], metadata["name"], merge_patch(current, status))
    for event in events:
        post_event(dict(body), event)


@kopf.on.event(GROUP, VERSION, "jobtypes", when=served)
async def job_type_changed(
    body: kopf.Body, type: str | None, namespace: str | None, name: str, **_: Any
) -> None:
    _remember(body, type)
    if type != "DELETED":
        await asyncio.to_thread(judge_job_type, json.loads(json.dumps(dict(body))))
    for pool in POOLS_BY_JOB_TYPE.pools_serving(namespace or "", name):
        RECONCILES.request((namespace or "", pool), reconcile_by_name)
