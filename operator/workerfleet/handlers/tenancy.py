"""What the cluster admin allows pools to ask of the operator, set once at start-up from the chart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workerfleet.planners.permissions import DEFAULT_QUEUE_CREDENTIALS_ROLE, DelegableRule
from workerfleet.planners.scope import serves_namespace


@dataclass(frozen=True)
class Tenancy:
    """The ceiling on workers' permissions, where pools may point the operator, what it serves."""

    delegable: tuple[DelegableRule, ...] = ()
    """rbac.delegableWorkerPermissions: the most a JobType may grant; nothing by default."""
    queue_credentials_role: str = DEFAULT_QUEUE_CREDENTIALS_ROLE
    """The ClusterRole a namespace admin binds to let the operator read queue credentials there."""
    queue_addresses: tuple[str, ...] = ()
    prometheus_addresses: tuple[str, ...] = ()
    watch_namespaces: tuple[str, ...] = ()


_settings = Tenancy()


def configure(settings: Tenancy) -> None:
    """Set at start-up, before any handler runs."""
    global _settings  # noqa: PLW0603  (one setting per process, from the command line)
    _settings = settings


def tenancy() -> Tenancy:
    return _settings


def served(namespace: str | None, **_: Any) -> bool:
    """kopf's `when` filter: objects in system namespaces are not the operator's unless watched."""
    return serves_namespace(namespace or "", _settings.watch_namespaces)
