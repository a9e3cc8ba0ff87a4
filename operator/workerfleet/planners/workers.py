"""The stable and canary workers of a pool: the rollout's next state, and the templates and replica
counts of both Deployments that go with it. Pure: the handler reads the pool and both Deployments,
this decides, the handler applies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from workerfleet.api.workerpool import RolloutStatus, WorkerPoolSpec
from workerfleet.planners.children import POD_TEMPLATE_ANNOTATION, REVISION_LABEL, Workers, revision_of
from workerfleet.planners.rollout import (
    ROLLOUT_ACTION_ANNOTATION,
    Measurement,
    RolloutInput,
    RolloutPlan,
    analysis_due,
    plan_rollout,
)


def _stable_template(
    deployment: Mapping[str, Any] | None, stable_revision: str | None
) -> dict[str, Any] | None:
    """The pod template the stable Deployment runs, when it is the one status calls stable."""
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    try:
        template = json.loads(annotations[POD_TEMPLATE_ANNOTATION])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(template, dict) or revision_of(template) != stable_revision:
        return None
    return template


def ready_replicas(deployment: Mapping[str, Any] | None, revision: str) -> int:
    """Ready workers of a Deployment that run `revision`, as its controller last counted."""
    if deployment is None:
        return 0
    labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
    status = deployment.get("status") or {}
    if labels.get(REVISION_LABEL) != revision:
        return 0
    if int(status.get("observedGeneration") or 0) < int(deployment["metadata"].get("generation") or 0):
        return 0
    return min(int(status.get("readyReplicas") or 0), int(status.get("updatedReplicas") or 0))


def _rollout_status(status: Mapping[str, Any]) -> RolloutStatus | None:
    try:
        return RolloutStatus.model_validate(status["rollout"]) if status.get("rollout") else None
    except ValidationError:
        return None  # written by an older operator: start the rollout state afresh


def plan_workers(
    pool: Mapping[str, Any],
    spec: WorkerPoolSpec,
    stable_deployment: Mapping[str, Any] | None,
    canary_deployment: Mapping[str, Any] | None,
    *,
    measurement: Measurement | None,
    now: datetime,
) -> tuple[Workers, RolloutPlan]:
    """The rollout's next state and the stable/canary templates and replicas that go with it."""
    status = pool.get("status") or {}
    template = spec.template.to_dict()
    revision = revision_of(template)
    stable_revision = status.get("stableRevision")
    stable_template = _stable_template(stable_deployment, stable_revision)
    rollout = _rollout_status(status)
    canary = spec.rollout.canary if spec.rollout is not None else None
    if measurement is not None and not analysis_due(rollout, canary.analysis if canary else None, now):
        measurement = None  # a window judged already, e.g. by a reconcile that raced the ticker
    plan = plan_rollout(
        RolloutInput(
            canary=canary,
            paused=spec.paused,
            total_replicas=spec.replicas,
            template_revision=revision,
            stable_revision=stable_revision,
            stable_template_known=stable_template is not None,
            canary_revision=status.get("canaryRevision"),
            rollout=rollout,
            canary_ready_replicas=ready_replicas(canary_deployment, revision),
            stable_ready_replicas=ready_replicas(stable_deployment, revision),
            action=(pool["metadata"].get("annotations") or {}).get(ROLLOUT_ACTION_ANNOTATION),
            measurement=measurement,
        ),
        now,
    )
    workers = Workers(
        stable_template=template
        if plan.stable_revision == revision or stable_template is None
        else stable_template,
        stable_replicas=plan.stable_replicas,
        canary_template=template if plan.canary_revision is not None else None,
        canary_replicas=plan.canary_replicas,
    )
    return workers, plan
