"""Which canary workers count as ready for a rollout step's clock."""

from __future__ import annotations

from typing import Any

import pytest

from workerfleet.handlers.workerpool import _ready_replicas


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
    assert _ready_replicas(deployment, "new") == ready
