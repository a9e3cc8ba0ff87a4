"""The worker-permission ceiling: a JobType rule is granted only when the delegable set covers all of it."""

from __future__ import annotations

from typing import Any

import pytest

from workerfleet.api.jobtype import Permission
from workerfleet.planners.permissions import DelegableRule, describe, not_delegable

CONFIGMAPS_READ = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}


def _permission(**rule: Any) -> Permission:
    return Permission.model_validate(rule)


CASES: list[tuple[str, list[dict[str, Any]], dict[str, Any], bool]] = [
    # (case, delegable set, requested rule, granted)
    ("nothing delegable", [], CONFIGMAPS_READ, False),
    ("exactly the delegable rule", [CONFIGMAPS_READ], CONFIGMAPS_READ, True),
    (
        "fewer verbs than delegable",
        [CONFIGMAPS_READ],
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        True,
    ),
    (
        "a verb beyond the delegable ones",
        [CONFIGMAPS_READ],
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "delete"]},
        False,
    ),
    (
        "another resource of the same group",
        [CONFIGMAPS_READ],
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        False,
    ),
    (
        "the same resource name in another group",
        [CONFIGMAPS_READ],
        {"apiGroups": ["example.com"], "resources": ["configmaps"], "verbs": ["get"]},
        False,
    ),
    (
        "one of two groups not delegable",
        [CONFIGMAPS_READ],
        {"apiGroups": ["", "apps"], "resources": ["configmaps"], "verbs": ["get"]},
        False,
    ),
    (
        "covered by two delegable rules together",
        [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]},
        ],
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        True,
    ),
    (
        "named objects within a rule for every object",
        [CONFIGMAPS_READ],
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a", "b"]},
        True,
    ),
    (
        "named objects within the delegable names",
        [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a", "b"]}],
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a"]},
        True,
    ),
    (
        "a name beyond the delegable names",
        [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a"]}],
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a", "c"]},
        False,
    ),
    (
        "every object where only named ones are delegable",
        [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a"]}],
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        False,
    ),
    (
        "wildcard verbs",
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}],
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["deletecollection", "create"]},
        True,
    ),
    (
        "wildcard resources cover subresources",
        [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}],
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get"]},
        True,
    ),
    (
        "a subresource wildcard covers that subresource of every resource",
        [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]}],
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},
        True,
    ),
    (
        "a subresource wildcard does not cover the resource itself",
        [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]}],
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        False,
    ),
    (
        "a resource does not cover its subresources",
        [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},
        False,
    ),
    (
        "wildcard groups",
        [{"apiGroups": ["*"], "resources": ["configmaps"], "verbs": ["get"]}],
        {"apiGroups": ["", "example.com"], "resources": ["configmaps"], "verbs": ["get"]},
        True,
    ),
]


@pytest.mark.parametrize(
    ("delegable", "requested", "granted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_rule_is_granted_only_when_the_delegable_set_covers_all_of_it(
    delegable: list[dict[str, Any]], requested: dict[str, Any], granted: bool
) -> None:
    ceiling = [DelegableRule.model_validate(rule) for rule in delegable]
    refused = not_delegable({"reader": [_permission(**requested)]}, ceiling)
    assert (refused == []) is granted, refused


def test_a_refusal_names_the_job_type_and_the_rule() -> None:
    secrets = _permission(apiGroups=[""], resources=["secrets"], verbs=["get"])
    refused = not_delegable({"reader": [_permission(**CONFIGMAPS_READ)], "thief": [secrets]}, [])
    assert [describe(refusal) for refusal in refused] == [
        'JobType reader: get,list,watch on configmaps (group "")',
        'JobType thief: get on secrets (group "")',
    ]
