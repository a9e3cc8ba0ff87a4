"""Which rules a pool's Role keeps when its JobTypes shrink, vanish, turn invalid or exceed the ceiling:
tables."""

from __future__ import annotations

from typing import Any

import pytest

from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.planners.permissions import DelegableRule
from workerfleet.planners.revocation import granted_rules, kept_rules

CONFIGMAPS_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
CONFIGMAPS_READ = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
SECRETS_GET = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
PRESETS_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["presets"]}
EVERYTHING = [DelegableRule.model_validate({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})]


def job_type(*permissions: dict[str, Any]) -> JobTypeSpec:
    return JobTypeSpec.model_validate(
        {"lane": "fast", "timeoutSeconds": 30, "permissions": list(permissions)}
    )


def test_the_granted_rules_are_the_usable_job_types_rules_within_the_ceiling() -> None:
    job_types = {"resize": job_type(CONFIGMAPS_GET), "steal": job_type(SECRETS_GET)}
    configmaps_only = [DelegableRule.model_validate(CONFIGMAPS_READ)]
    assert granted_rules(job_types, EVERYTHING) == [CONFIGMAPS_GET, SECRETS_GET]
    assert granted_rules(job_types, configmaps_only) == [CONFIGMAPS_GET]
    assert granted_rules(job_types, []) == []
    assert granted_rules({}, EVERYTHING) == []


@pytest.mark.parametrize(
    ("case", "live", "granted", "kept"),
    [
        ("every rule still granted", [CONFIGMAPS_GET], [CONFIGMAPS_GET, SECRETS_GET], None),
        ("nothing live", [], [CONFIGMAPS_GET], None),
        ("the JobType that granted it is gone", [CONFIGMAPS_GET, SECRETS_GET], [SECRETS_GET], [SECRETS_GET]),
        ("nothing granted any more", [CONFIGMAPS_GET], [], []),
        ("covered by a wider granted rule", [PRESETS_GET], [CONFIGMAPS_READ], None),
        ("wider than what is granted now", [CONFIGMAPS_READ], [CONFIGMAPS_GET], []),
        (
            "live order and spelling do not matter",
            [{**CONFIGMAPS_READ, "verbs": ["watch", "get", "list"]}],
            [CONFIGMAPS_READ],
            None,
        ),
        (
            "a hand-made rule no JobType grants",
            [CONFIGMAPS_GET, {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            [CONFIGMAPS_GET],
            [CONFIGMAPS_GET],
        ),
        ("a rule the models cannot read", [{"apiGroups": [""], "resources": ["pods"]}], [CONFIGMAPS_GET], []),
    ],
)
def test_a_live_role_keeps_only_the_rules_still_granted(
    case: str, live: list[dict[str, Any]], granted: list[dict[str, Any]], kept: list[dict[str, Any]] | None
) -> None:
    assert kept_rules(live, granted) == kept, case
