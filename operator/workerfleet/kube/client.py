"""The one place that talks to the Kubernetes API: server-side apply, deletes, status, reads.

Writes are skipped when they would change nothing: every applied object carries a hash of what
was applied, and an object whose hash matches is left alone, so a steady-state reconcile sends no
write at all (only reads). `writes` counts what was sent, for tests and metrics.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import dynamic
from kubernetes.dynamic.exceptions import ForbiddenError, NotFoundError, ResourceNotFoundError

from workerfleet.api.base import API_VERSION
from workerfleet.planners.children import ChildKey, Manifest

FIELD_MANAGER = "workerfleet"
UNSERVED_KIND_RECHECK_SECONDS = 60.0
"""How long a kind the API server does not serve (KEDA's, before KEDA is installed) stays unserved
here, so a missing kind costs one discovery request a minute, not one per reconcile."""
APPLIED_HASH_ANNOTATION = "workerfleet.dev/applied-hash"


def applied_hash(manifest: Mapping[str, Any]) -> str:
    """Hash of what the operator applies, without the annotation that records the hash."""
    unhashed = json.loads(json.dumps(manifest))
    metadata = unhashed.get("metadata", {})
    annotations = metadata.get("annotations", {})
    annotations.pop(APPLIED_HASH_ANNOTATION, None)
    if not annotations:
        metadata.pop("annotations", None)
    return hashlib.sha256(json.dumps(unhashed, sort_keys=True).encode()).hexdigest()[:16]


def with_applied_hash(manifest: Mapping[str, Any]) -> Manifest:
    stamped: Manifest = json.loads(json.dumps(manifest))
    annotations = stamped.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[APPLIED_HASH_ANNOTATION] = applied_hash(manifest)
    return stamped


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl picks it."""
    try:
        _, context = k8s_config.list_kube_config_contexts()
    except (k8s_config.ConfigException, OSError):
        return "default"
    return str((context or {}).get("context", {}).get("namespace") or "default")


class KindNotServedError(LookupError):
    """The API server serves no such kind, e.g. KEDA's ScaledObject where KEDA is not installed."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"the API server serves no {kind} ({api_version})")
        self.kind = kind


class Kube:
    """Typed-enough access to the handful of kinds workerfleet reads and writes."""

    def __init__(self, api_client: k8s.ApiClient | None = None) -> None:
        if api_client is None:
            try:
                k8s_config.load_incluster_config()
            except k8s_config.ConfigException:
                k8s_config.load_kube_config()
            api_client = k8s.ApiClient()
        self._dynamic = dynamic.DynamicClient(api_client)
        self._lock = threading.Lock()
        self._discovery_lock = threading.Lock()
        """The dynamic client's discovery cache is not thread-safe; handlers and pollers share it."""
        self._unserved: dict[tuple[str, str], float] = {}
        self.writes = 0

    def _resource(self, api_version: str, kind: str) -> Any:
        """The API resource of a kind; raises KindNotServedError when the API server has no such kind."""
        key = (api_version, kind)
        if self._unserved.get(key, 0.0) > time.monotonic():
            raise KindNotServedError(api_version, kind)
        try:
            with self._discovery_lock:
                return self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError as error:
            self._unserved[key] = time.monotonic() + UNSERVED_KIND_RECHECK_SECONDS
            raise KindNotServedError(api_version, kind) from error

    def _count_write(self) -> None:
        with self._lock:
            self.writes += 1

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        """The object, or None when it does not exist (or its kind is not served at all)."""
        try:
            found = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except (NotFoundError, KindNotServedError):
            return None
        result: Manifest = found.to_dict()
        return result

    def apply(self, manifest: Mapping[str, Any]) -> bool:
        """Server-side apply `manifest` unless the live object already holds it; True if written."""
        metadata = manifest["metadata"]
        stamped = with_applied_hash(manifest)
        live = self.get(manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"])
        if live is not None:
            live_annotations = live["metadata"].get("annotations") or {}
            if (
                live_annotations.get(APPLIED_HASH_ANNOTATION)
                == stamped["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
            ):
                return False
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        self._dynamic.server_side_apply(
            resource,
            body=stamped,
            namespace=metadata["namespace"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        self._count_write()
        return True

    def delete(self, namespace: str, key: ChildKey) -> bool:
        """Delete the object if it exists; True if a delete was sent."""
        if self.get(key.api_version, key.kind, namespace, key.name) is None:
            return False
        try:
            self._resource(key.api_version, key.kind).delete(name=key.name, namespace=namespace)
        except NotFoundError:
            return False
        self._count_write()
        return True

    def patch_pool_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        resource = self._resource(API_VERSION, "WorkerPool")
        self._dynamic.patch(
            resource.subresources["status"],
            body={"status": dict(status)},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        self._count_write()

    def may_get_external_metric(self, user: str, groups: list[str], namespace: str, metric: str) -> bool:
        """Whether `user` may read an external metric in `namespace` (a SubjectAccessReview)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "resourceAttributes": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "resource": metric,
                    "namespace": namespace,
                    "verb": "get",
                },
            },
        }
        result = self._resource("authorization.k8s.io/v1", "SubjectAccessReview").create(body=review)
        return bool(result.status.allowed)

    def front_proxy_trust(self) -> tuple[str, list[str]]:
        """The aggregator's client CA and allowed names, as the API server publishes them."""
        config_map = self.get("v1", "ConfigMap", "kube-system", "extension-apiserver-authentication")
        if config_map is None:
            raise LookupError(
                "kube-system/extension-apiserver-authentication not found: is aggregation enabled?"
            )
        data = config_map.get("data") or {}
        names: list[str] = json.loads(data.get("requestheader-allowed-names") or "[]")
        return data["requestheader-client-ca-file"], names

    def scale_pool(self, namespace: str, name: str, replicas: int) -> None:
        """Set a pool's replicas, as `kubectl scale` would (the HPA owns them otherwise)."""
        self._dynamic.patch(
            self._resource(API_VERSION, "WorkerPool"),
            body={"spec": {"replicas": replicas}},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        self._count_write()

    def patch_pool(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """A JSON merge patch of a pool (its annotations or spec), as `kubectl patch --type merge`."""
        self._dynamic.patch(
            self._resource(API_VERSION, "WorkerPool"),
            body=dict(patch),
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        self._count_write()

    def list_pools(self, namespaces: tuple[str, ...] = ()) -> list[Manifest]:
        """Every WorkerPool in `namespaces`, or in the whole cluster when none are given."""
        resource = self._resource(API_VERSION, "WorkerPool")
        found = (
            [resource.get(namespace=namespace) for namespace in namespaces]
            if namespaces
            else [resource.get()]
        )
        return [item.to_dict() for listing in found for item in listing.items]

    def label_pod(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) labels on a pod: the operator marks its own pod active."""
        self._dynamic.patch(
            self._resource("v1", "Pod"),
            body={"metadata": {"labels": dict(labels)}},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        self._count_write()

    def pod_labels(self, namespace: str, label_selector: str) -> dict[str, dict[str, str]]:
        """Name to labels of the pods in `namespace` that `label_selector` selects."""
        listing = self._resource("v1", "Pod").get(namespace=namespace, label_selector=label_selector)
        pods = [item.to_dict() for item in listing.items]
        return {str(pod["metadata"]["name"]): dict(pod["metadata"].get("labels") or {}) for pod in pods}

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One value of a Secret, decoded; the caller keeps it in memory only.

        A Secret the operator may not read is reported like a missing one: the chart lists the
        Secrets it may read (rbac.queueCredentialSecrets).
        """
        try:
            secret = self.get("v1", "Secret", namespace, name)
        except ForbiddenError as error:
            raise LookupError(f"the operator may not read Secret {namespace}/{name}") from error
        if secret is None:
            raise LookupError(f"Secret {namespace}/{name} not found")
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(encoded).decode()
