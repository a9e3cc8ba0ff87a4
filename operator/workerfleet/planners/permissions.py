"""The worker-permission ceiling: which JobType rules the operator may write into a pool's Role.

The API server lets the operator grant whatever it holds itself, so its own rights are no ceiling.
The ceiling is the chart's `rbac.delegableWorkerPermissions`, checked here before any Role is
written: a rule is granted only when the delegable set covers every request it allows. The matching
follows RBAC's: `*` in groups, resources or verbs, `*/sub` for one subresource of every resource, and
a delegable rule with resourceNames covers only those names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from workerfleet.api.base import ApiModel
from workerfleet.api.jobtype import Permission

WILDCARD = "*"
DEFAULT_QUEUE_CREDENTIALS_ROLE = "workerfleet-queue-credentials"
"""The chart's ClusterRole (for a release named workerfleet) that lets the operator read queue
credentials in the namespaces where it is bound."""


class DelegableRule(ApiModel):
    """One rule of rbac.delegableWorkerPermissions, in the shape of an RBAC PolicyRule."""

    api_groups: Annotated[list[str], Field(min_length=1)]
    """API groups; "*" is every group."""
    resources: Annotated[list[str], Field(min_length=1)]
    """Resources; "*" is every resource and subresource, "*/scale" one subresource of every resource."""
    verbs: Annotated[list[str], Field(min_length=1)]
    """Verbs; "*" is every verb."""
    resource_names: list[str] | None = None
    """Only these objects; absent or empty is every object."""


@dataclass(frozen=True)
class Refusal:
    """A JobType rule the delegable set does not cover."""

    job_type: str
    permission: Permission


def _resource_matches(allowed: str, requested: str) -> bool:
    if allowed in (WILDCARD, requested):
        return True
    _, slash, subresource = requested.partition("/")
    return bool(slash) and allowed == f"{WILDCARD}/{subresource}"


def _covers(rule: DelegableRule, group: str, resource: str, verb: str, name: str | None) -> bool:
    """Whether `rule` allows one request; `name` None is a request on every object."""
    return (
        any(allowed in (WILDCARD, group) for allowed in rule.api_groups)
        and any(_resource_matches(allowed, resource) for allowed in rule.resources)
        and any(allowed in (WILDCARD, verb) for allowed in rule.verbs)
        and (not rule.resource_names or (name is not None and name in rule.resource_names))
    )


def covered(permission: Permission, ceiling: Sequence[DelegableRule]) -> bool:
    """Whether `ceiling` allows every request `permission` allows."""
    names: Sequence[str | None] = permission.resource_names or [None]
    return all(
        any(_covers(rule, group, resource, str(verb), name) for rule in ceiling)
        for group in permission.api_groups
        for resource in permission.resources
        for verb in permission.verbs
        for name in names
    )


def not_delegable(
    permissions: Mapping[str, Iterable[Permission]], ceiling: Sequence[DelegableRule]
) -> list[Refusal]:
    """Every JobType rule (JobType name to its permissions) the ceiling does not cover, by JobType."""
    return [
        Refusal(job_type, permission)
        for job_type in sorted(permissions)
        for permission in permissions[job_type]
        if not covered(permission, ceiling)
    ]


def describe(refusal: Refusal) -> str:
    """The refused rule as a person reads it, e.g. `JobType x: get on secrets (group "")`."""
    permission = refusal.permission
    verbs = ",".join(str(verb) for verb in permission.verbs)
    resources = ",".join(permission.resources)
    groups = ",".join(f'"{group}"' for group in permission.api_groups)
    names = f" named {','.join(permission.resource_names)}" if permission.resource_names else ""
    return f"JobType {refusal.job_type}: {verbs} on {resources}{names} (group {groups})"
