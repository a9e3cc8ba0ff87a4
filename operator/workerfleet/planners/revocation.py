"""Revocation first: which rules a pool's live Role may keep, computed before anything else is written.

A JobType that is deleted, turns invalid, loses a permission or asks for more than the delegable
ceiling must stop granting at once, whatever else the reconcile can or cannot do. The granted rules
are those of the pool's usable JobTypes that the ceiling covers; a live rule stays only if the granted
rules allow every request it allows. Revocation only takes away: growing the Role is the ordinary
plan's job, and that waits until every JobType is usable. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from workerfleet.api.jobtype import JobTypeSpec, Permission
from workerfleet.planners.children import Manifest, rules_of
from workerfleet.planners.permissions import DelegableRule, covered


def granted_rules(job_types: Mapping[str, JobTypeSpec], ceiling: Sequence[DelegableRule]) -> list[Manifest]:
    """The Role rules the pool may hold now: the permissions of its usable JobTypes (found and valid)
    that the ceiling covers, as `plan_children` writes them."""
    permissions = [permission for job_type in job_types.values() for permission in job_type.permissions]
    return rules_of(permission for permission in permissions if covered(permission, ceiling))


def _still_granted(rule: Mapping[str, Any], granted: Sequence[DelegableRule]) -> bool:
    try:
        permission = Permission.model_validate(rule)
    except ValidationError:
        return False  # not a rule the operator writes (a hand edit): nothing grants it
    return covered(permission, granted)


def kept_rules(live_rules: Sequence[Mapping[str, Any]], granted: Sequence[Manifest]) -> list[Manifest] | None:
    """The live Role's rules that `granted` still allows whole, in their order; None when every one is
    (nothing to revoke). An empty list: nothing may stay."""
    allowed = [DelegableRule.model_validate(rule) for rule in granted]
    kept = [dict(rule) for rule in live_rules if _still_granted(rule, allowed)]
    return None if len(kept) == len(live_rules) else kept
