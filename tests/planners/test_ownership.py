"""Whether a live child is the pool's, and whether it still holds what was applied: table tests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workerfleet.planners.ownership import as_applied, controller_uid, fields_of, holder, holds_applied

MANAGER = "workerfleet"
POOL_UID = "uid-of-pool"


def owner(uid: str, *, controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": "workerfleet.dev/v1alpha1", "kind": "WorkerPool", "name": "p", "uid": uid} | (
        {"controller": True} if controller else {}
    )


@pytest.mark.parametrize(
    ("references", "expected"),
    [
        (None, None),
        ([], None),
        ([owner(POOL_UID)], POOL_UID),
        ([owner("someone-else")], "someone-else"),
        ([owner(POOL_UID, controller=False)], None),  # an owner, but not the controller
        ([owner("a", controller=False), owner(POOL_UID)], POOL_UID),
    ],
)
def test_controller_uid(references: list[dict[str, Any]] | None, expected: str | None) -> None:
    metadata: dict[str, Any] = {"name": "child"}
    if references is not None:
        metadata["ownerReferences"] = references
    assert controller_uid({"metadata": metadata}) == expected


MANIFEST: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "thumbs",
        "namespace": "media",
        "labels": {"app": "thumbs"},
        "ownerReferences": [owner(POOL_UID)],
    },
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "worker",
                        "image": "thumbs:1",
                        "ports": [{"containerPort": 8080}],
                        "securityContext": {"capabilities": {"drop": ["ALL"]}},
                        "resources": {"limits": {"cpu": "0.5"}},
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            }
        },
    },
}
CONTAINER_FIELDS: dict[str, Any] = {
    ".": {},
    "f:name": {},
    "f:image": {},
    "f:ports": {'k:{"containerPort":8080,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
    "f:securityContext": {"f:capabilities": {"f:drop": {'v:"ALL"': {}}}},
    "f:resources": {"f:limits": {"f:cpu": {}}},
}


def applied_fields(*, replicas: bool = True, image: bool = True, drop: bool = True) -> dict[str, Any]:
    container = dict(CONTAINER_FIELDS)
    if not image:
        del container["f:image"]
    if not drop:
        container["f:securityContext"] = {"f:capabilities": {"f:drop": {}}}  # an atomic list: as a whole
    spec: dict[str, Any] = {
        "f:template": {
            "f:spec": {
                "f:containers": {'k:{"name":"worker"}': container},
                "f:volumes": {'k:{"name":"tmp"}': {".": {}, "f:name": {}, "f:emptyDir": {}}},
            }
        }
    }
    if replicas:
        spec["f:replicas"] = {}
    return {
        "f:metadata": {
            "f:labels": {"f:app": {}},
            "f:ownerReferences": {f'k:{{"uid":"{POOL_UID}"}}': {}},
        },
        "f:spec": spec,
    }


def live(*entries: tuple[str, dict[str, Any], str | None], as_text: bool = False) -> dict[str, Any]:
    managed = [
        {"manager": manager, "operation": "Apply", "fieldsV1": json.dumps(fields) if as_text else fields}
        | ({"subresource": subresource} if subresource else {})
        for manager, fields, subresource in entries
    ]
    return {"metadata": {"name": "thumbs", "managedFields": managed}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (live((MANAGER, applied_fields(), None)), True),
        (live((MANAGER, applied_fields(), None), as_text=True), True),  # as the watch memory keeps it
        # `kubectl scale`: replicas moved to kubectl's manager
        (live((MANAGER, applied_fields(replicas=False), None), ("kubectl", {"f:spec": {}}, "scale")), False),
        # `kubectl set image`: the image is someone else's
        (live((MANAGER, applied_fields(image=False), None)), False),
        # an atomic list owned as a whole holds whatever is in it
        (live((MANAGER, applied_fields(drop=False), None)), True),
        # fields split between two of the operator's own entries (a create, then applies)
        (
            live(
                (MANAGER, applied_fields(replicas=False), None),
                (MANAGER, {"f:spec": {"f:replicas": {}}}, None),
            ),
            True,
        ),
        # what the operator owns on the status subresource says nothing about the object
        (
            live(
                (MANAGER, applied_fields(replicas=False), None),
                (MANAGER, {"f:spec": {"f:replicas": {}}}, "status"),
            ),
            False,
        ),
        # another manager's label beside ours is no drift
        (
            live(
                (MANAGER, applied_fields(), None),
                ("kubectl-label", {"f:metadata": {"f:labels": {"f:x": {}}}}, None),
            ),
            True,
        ),
        (live(("kubectl-edit", applied_fields(), None)), False),  # not the operator's at all
        ({"metadata": {"name": "thumbs"}}, False),  # no managedFields: nothing known to be ours
    ],
)
def test_holds_applied(body: dict[str, Any], expected: bool) -> None:
    assert holds_applied(body, MANIFEST, MANAGER) is expected


def test_a_removed_container_is_drift() -> None:
    fields = applied_fields()
    del fields["f:spec"]["f:template"]["f:spec"]["f:containers"]  # the server drops emptied field sets
    assert not holds_applied(live((MANAGER, fields, None)), MANIFEST, MANAGER)


def test_fields_of_merges_the_managers_entries() -> None:
    body = live((MANAGER, {"f:a": {"f:b": {}}}, None), (MANAGER, {"f:a": {"f:c": {}}}, None))
    assert fields_of(body, MANAGER) == {"f:a": {"f:b": {}, "f:c": {}}}
    assert fields_of(body, "someone") is None


def _managed_by(*managers: str) -> list[dict[str, Any]]:
    return [{"manager": manager, "operation": "Update", "fieldsV1": {}} for manager in managers]


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ({"ownerReferences": [owner("u")], "managedFields": _managed_by("x")}, "controlled by WorkerPool p"),
        ({"ownerReferences": [owner("u", controller=False)]}, "owned by WorkerPool p"),
        (
            {"managedFields": _managed_by("kubectl-create", "kubectl-create", "helm")},
            "managed by helm, kubectl-create",
        ),
        ({}, "no owner or field manager recorded"),
    ],
)
def test_whoever_holds_a_taken_name_is_named(metadata: dict[str, Any], words: str) -> None:
    assert holder({"metadata": metadata}) == words
    assert "next attempt" in holder(None)


CREATED = {  # what the API server records for a create (operation Update), as seen on v1.36
    "f:data": {".": {}, "f:policies.json": {}},
    "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
    "f:spec": {
        "f:selector": {},
        "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}},
        "f:template": {
            "f:spec": {
                "f:containers": {
                    'k:{"name":"w"}': {
                        ".": {},
                        "f:env": {".": {}, 'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {},
                    }
                },
                "f:securityContext": {},
            }
        },
    },
    "f:empty": {".": {}},
}
APPLIED = {  # what an apply of the same object records
    "f:data": {"f:policies.json": {}},
    "f:metadata": {"f:labels": {"f:a": {}}},
    "f:spec": {
        "f:selector": {},
        "f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}}},
        "f:template": {
            "f:spec": {
                "f:containers": {
                    'k:{"name":"w"}': {
                        ".": {},
                        "f:env": {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {},
                    }
                },
                "f:securityContext": {},
            }
        },
    },
}


def test_a_creates_field_set_is_recorded_as_an_apply_would_record_it() -> None:
    # Kept, data's "." would outlive a hand edit of data.policies.json (kubectl patch takes the key),
    # and the server then shows data as owned whole ("f:data": {}), hiding the drift.
    assert as_applied(CREATED) == APPLIED
