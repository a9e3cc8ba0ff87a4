"""The stable and canary workers of a pool, and which canary workers count as ready for a rollout
step's clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from workerfleet.api.workerpool import WorkerPoolSpec
from workerfleet.planners.children import POD_TEMPLATE_ANNOTATION, revision_of
from workerfleet.planners.workers import plan_workers, ready_replicas

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def canary_deployment(
    revision: str = "new", generation: int = 2, observed: int = 2, ready: int = 3, updated: int = 3
) -> dict[str, Any]:
    return {
        "metadata": {"name": "thumbs-canary", "generation": generation},
        "spec": {"template": {"metadata": {"labels": {"workerfleet.dev/revision": revision}}}},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated},
    }


@pytest.mark.parametrize(
    ("deployment", "ready"),
    [
        (None, 0),
        (canary_deployment(), 3),
        (canary_deployment(revision="superseded"), 0),
        (canary_deployment(generation=3, observed=2), 0),
        (canary_deployment(ready=3, updated=1), 1),
        (canary_deployment(ready=1, updated=3), 1),
        ({**canary_deployment(), "status": {}}, 0),
    ],
    ids=[
        "none",
        "all ready",
        "other revision",
        "not observed yet",
        "old pods ready",
        "starting",
        "no status",
    ],
)
def test_ready_canary_workers(deployment: dict[str, Any] | None, ready: int) -> None:
    assert ready_replicas(deployment, "new") == ready


def pool(
    status: dict[str, Any] | None = None, image: str = "thumbs:2"
) -> tuple[dict[str, Any], WorkerPoolSpec]:
    spec = {
        "jobTypes": ["resize"],
        "replicas": 10,
        "template": {"spec": {"containers": [{"name": "worker", "image": image}]}},
        "queue": {"redis": {"address": "redis:6379", "list": "jobs"}},
        "rollout": {"canary": {"steps": [{"weight": 20, "pauseSeconds": 60}]}},
    }
    body = {"metadata": {"name": "thumbs", "namespace": "media"}, "spec": spec, "status": status or {}}
    return body, WorkerPoolSpec.model_validate(spec)


def stable_deployment(template: dict[str, Any]) -> dict[str, Any]:
    revision = revision_of(template)
    return {
        "metadata": {
            "name": "thumbs",
            "generation": 1,
            "annotations": {POD_TEMPLATE_ANNOTATION: json.dumps(template)},
        },
        "spec": {"template": {"metadata": {"labels": {"workerfleet.dev/revision": revision}}}},
        "status": {"observedGeneration": 1, "readyReplicas": 10, "updatedReplicas": 10},
    }


def test_a_first_template_runs_as_stable_with_every_replica() -> None:
    body, spec = pool()
    workers, plan = plan_workers(body, spec, None, None, measurement=None, now=NOW)
    assert workers.stable_template == spec.template.to_dict()
    assert (workers.stable_replicas, workers.canary_template, workers.canary_replicas) == (10, None, 0)
    assert plan.stable_revision == revision_of(spec.template.to_dict())


def test_a_new_template_starts_a_canary_while_stable_keeps_the_template_it_runs() -> None:
    # Given a pool whose stable Deployment runs image 1
    _, old_spec = pool(image="thumbs:1")
    old_template = old_spec.template.to_dict()
    status = {"stableRevision": revision_of(old_template)}
    # When its template changes to image 2
    body, spec = pool(status, image="thumbs:2")
    workers, plan = plan_workers(body, spec, stable_deployment(old_template), None, measurement=None, now=NOW)
    # Then stable keeps image 1 and a canary runs image 2 on the first step's share, and stable keeps
    # every replica until the canary's workers are ready
    assert workers.stable_template == old_template
    assert workers.canary_template == spec.template.to_dict()
    assert (workers.stable_replicas, workers.canary_replicas) == (10, 2)
    assert plan.canary_revision == revision_of(spec.template.to_dict())
