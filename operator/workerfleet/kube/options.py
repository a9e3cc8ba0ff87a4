"""Which cluster, as whom: kubectl's connection flags, as plain data the command line fills in.

No dependencies, so a command can parse its flags before it knows whether it needs the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from workerfleet import __version__

OPERATOR_COMPONENT = "operator"


@dataclass(frozen=True)
class ClusterOptions:
    """kubectl's `--kubeconfig`, `--context`, `-n`, `--as`, `--as-group`; unset means the kubeconfig's."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    impersonate_user: str | None = None
    impersonate_groups: tuple[str, ...] = ()
    component: str = OPERATOR_COMPONENT
    """Which part of workerfleet sends the requests; the User-Agent names it."""

    @property
    def user_agent(self) -> str:
        return user_agent(self.component)


def user_agent(component: str) -> str:
    """`workerfleet/<version> (<component>)`: audit logs tell workerfleet's requests apart."""
    return f"workerfleet/{__version__} ({component})"
