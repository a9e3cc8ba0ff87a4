"""The external metrics APIService: registered while a replica serves it, removed when the last one stops.

A registered APIService that nothing answers makes discovery fail, and the namespace controller and
the garbage collector then stall cluster-wide. So the active replica applies it, and a replica that
stops gracefully removes it when no other live replica remains. These functions decide what to apply
and whether an APIService found in the cluster is this operator's to take over or remove.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workerfleet.planners.peering import parse_peers

API_SERVICE_NAME = "v1beta1.external.metrics.k8s.io"
API_VERSION = "apiregistration.k8s.io/v1"


@dataclass(frozen=True)
class Target:
    """The Service the APIService routes to, and the CA that signed the operator's certificate."""

    namespace: str
    service: str
    port: int
    ca_pem: bytes


@dataclass(frozen=True)
class Owner:
    """A cluster-scoped object of the release (its ClusterRole): when it goes, the GC removes the
    APIService, whatever order `helm uninstall` deletes things in and whether the operator runs."""

    api_version: str
    kind: str
    name: str
    uid: str


def manifest(target: Target, owner: Owner | None) -> dict[str, Any]:
    """The APIService to server-side apply. No `blockOwnerDeletion`: it would need `update` on the
    owner's finalizers, and nothing waits on this dependent."""
    metadata: dict[str, Any] = {
        "name": API_SERVICE_NAME,
        "labels": {"app.kubernetes.io/managed-by": "workerfleet"},
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid}
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": "APIService",
        "metadata": metadata,
        "spec": {
            "group": "external.metrics.k8s.io",
            "version": "v1beta1",
            "service": {"namespace": target.namespace, "name": target.service, "port": target.port},
            # Verifies the operator's serving certificate: never insecureSkipTLSVerify.
            "caBundle": base64.b64encode(target.ca_pem).decode(),
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }


def _service(live: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((live.get("spec") or {}).get("service")) or {}


def _routes_to(live: Mapping[str, Any], target: Target) -> bool:
    """Whether the APIService routes to the operator's own Service: namespace and name."""
    service = _service(live)
    return service.get("namespace") == target.namespace and service.get("name") == target.service


def may_take(live: Mapping[str, Any] | None, target: Target) -> bool:
    """Whether the active replica may apply over what is there: nothing, or an APIService routing to
    the operator's own Service. Another external metrics server's APIService (one per cluster) is left
    alone, even one whose Service is in the release namespace: a neighbour's, not this release's. (An
    APIService an older chart templated is deleted by `helm upgrade`, not taken over.)"""
    return live is None or _routes_to(live, target)


def needs_apply(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether the live APIService differs from `desired` in what the operator sets (no write otherwise)."""
    if live is None:
        return True
    live_spec = live.get("spec") or {}
    if any(live_spec.get(key) != value for key, value in desired["spec"].items()):
        return True
    wanted_owners = desired["metadata"].get("ownerReferences") or []
    live_owners = {
        (o.get("kind"), o.get("name"), o.get("uid")) for o in live["metadata"].get("ownerReferences") or []
    }
    return any((o["kind"], o["name"], o["uid"]) not in live_owners for o in wanted_owners)


def may_remove(live: Mapping[str, Any] | None, target: Target) -> bool:
    """Whether a stopping replica may delete the APIService: it routes to this operator's Service."""
    return live is not None and _routes_to(live, target)


def other_live_peers(status: Mapping[str, Any] | None, identity: str, now: datetime) -> list[str]:
    """Identities of the live replicas other than `identity` in a peering object's status: while one
    remains, a stopping replica leaves the APIService for it to serve."""
    return sorted(
        peer.identity for peer in parse_peers(status, now) if peer.identity != identity and peer.alive(now)
    )
