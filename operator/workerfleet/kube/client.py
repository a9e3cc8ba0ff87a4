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
from prometheus_client import Counter

from workerfleet.api.base import API_VERSION
from workerfleet.kube.rate_limit import RateLimiter
from workerfleet.kube.store import ABSENT, AppliedChildren, ObjectKey, WatchedObjects
from workerfleet.planners.children import ChildKey, Manifest

FIELD_MANAGER = "workerfleet"
UNSERVED_KIND_RECHECK_SECONDS = 60.0
"""How long a kind the API server does not serve (KEDA's, before KEDA is installed) stays unserved
here, so a missing kind costs one discovery request a minute, not one per reconcile."""
APPLIED_HASH_ANNOTATION = "workerfleet.dev/applied-hash"
API_REQUESTS = Counter(
    "workerfleet_api_requests_total",
    "Requests the operator's client sent to the API server, by verb.",
    ["verb"],
)
API_THROTTLED_SECONDS = Counter(
    "workerfleet_api_throttled_seconds_total",
    "Time the operator's requests waited for its client-side rate limit (--api-qps, --api-burst).",
)
CONNECTION_POOL_SIZE = 32
"""Open connections kept to the API server: more than the threads that share the client, so no request
pays for a new TLS handshake because another thread holds the pooled connection."""


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


def _hash_of(body: Mapping[str, Any] | None) -> str:
    return str(((body or {}).get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION))


class Kube:
    """Typed-enough access to the handful of kinds workerfleet reads and writes.

    Every request waits for the rate limiter first; reads of watched kinds are answered from what the
    watches showed (`watched`), and children known to hold what would be applied cost no request.
    """

    def __init__(
        self, api_client: k8s.ApiClient | None = None, rate_limiter: RateLimiter | None = None
    ) -> None:
        if api_client is None:
            configuration = k8s.Configuration()
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except k8s_config.ConfigException:
                k8s_config.load_kube_config(client_configuration=configuration)
            configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
            api_client = k8s.ApiClient(configuration)
        self._dynamic = dynamic.DynamicClient(api_client)
        self._lock = threading.Lock()
        self._discovery_lock = threading.Lock()
        """The dynamic client's discovery cache is not thread-safe; handlers and pollers share it."""
        self._unserved: dict[tuple[str, str], float] = {}
        self._limiter = rate_limiter or RateLimiter()
        self.watched = WatchedObjects()
        self.applied = AppliedChildren()
        self.writes = 0

    def _request(self, verb: str) -> None:
        """Wait until the rate limit lets one request go, and count it in the operator's metrics."""
        API_THROTTLED_SECONDS.inc(self._limiter.acquire())
        API_REQUESTS.labels(verb).inc()

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
        """The object, or None when it does not exist (or its kind is not served at all).

        A watched kind is answered from what the watches (or this client's own writes) showed last.
        """
        key: ObjectKey = (api_version, kind, namespace, name)
        if self.watched.tracks(api_version, kind):
            seen, body = self.watched.lookup(key)
            if seen:
                return body
        body = self.read(api_version, kind, namespace, name)
        if self.watched.tracks(api_version, kind):
            self.watched.remember_read(key, body)
        return body

    def read(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        """The object as the API server has it now (one request), or None when it does not exist."""
        try:
            resource = self._resource(api_version, kind)
            self._request("get")
            found = resource.get(name=name, namespace=namespace)
        except (NotFoundError, KindNotServedError):
            return None
        result: Manifest = found.to_dict()
        return result

    def apply(self, manifest: Mapping[str, Any]) -> bool:
        """Server-side apply `manifest` unless the live object already holds it; True if written."""
        metadata = manifest["metadata"]
        stamped = with_applied_hash(manifest)
        desired = stamped["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        key: ObjectKey = (manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"])
        watched = self.watched.tracks(manifest["apiVersion"], manifest["kind"])
        if not watched and self.applied.holds(key, desired):
            return False
        live = self.get(*key) if watched else self.read(*key)
        if live is not None and _hash_of(live) == desired:
            if not watched:
                self.applied.remember(key, desired)
            return False
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        self._request("patch")
        applied = self._dynamic.server_side_apply(
            resource,
            body=stamped,
            namespace=metadata["namespace"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        self._count_write()
        if watched:
            self.watched.remember(applied.to_dict())
        else:
            self.applied.remember(key, desired)
        return True

    def delete(self, namespace: str, key: ChildKey) -> bool:
        """Delete the object if it exists; True if a delete was sent."""
        object_key: ObjectKey = (key.api_version, key.kind, namespace, key.name)
        watched = self.watched.tracks(key.api_version, key.kind)
        if not watched and self.applied.holds(object_key, ABSENT):
            return False
        live = self.get(*object_key) if watched else self.read(*object_key)
        if live is None:
            if not watched:
                self.applied.remember(object_key, ABSENT)
            return False
        try:
            resource = self._resource(key.api_version, key.kind)
            self._request("delete")
            resource.delete(name=key.name, namespace=namespace)
        except NotFoundError:
            self._gone(object_key, watched)
            return False
        self._gone(object_key, watched)
        self._count_write()
        return True

    def _gone(self, key: ObjectKey, watched: bool) -> None:
        """A delete succeeded or found nothing: the object is no more (a failed delete changes nothing)."""
        if watched:
            self.watched.forget(key)
        else:
            self.applied.remember(key, ABSENT)

    def patch_pool_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        resource = self._resource(API_VERSION, "WorkerPool")
        self._request("patch")
        patched = self._dynamic.patch(
            resource.subresources["status"],
            body={"status": dict(status)},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        self._count_write()
        self.watched.remember(patched.to_dict())

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
        resource = self._resource("authorization.k8s.io/v1", "SubjectAccessReview")
        self._request("create")
        result = resource.create(body=review)
        return bool(result.status.allowed)

    def front_proxy_trust(self) -> tuple[str, list[str]]:
        """The aggregator's client CA and allowed names, as the API server publishes them."""
        config_map = self.read("v1", "ConfigMap", "kube-system", "extension-apiserver-authentication")
        if config_map is None:
            raise LookupError(
                "kube-system/extension-apiserver-authentication not found: is aggregation enabled?"
            )
        data = config_map.get("data") or {}
        names: list[str] = json.loads(data.get("requestheader-allowed-names") or "[]")
        return data["requestheader-client-ca-file"], names

    def scale_pool(self, namespace: str, name: str, replicas: int) -> None:
        """Set a pool's replicas, as `kubectl scale` would (the HPA owns them otherwise)."""
        self.patch_pool(namespace, name, {"spec": {"replicas": replicas}})

    def patch_pool(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """A JSON merge patch of a pool (its annotations or spec), as `kubectl patch --type merge`."""
        resource = self._resource(API_VERSION, "WorkerPool")
        self._request("patch")
        patched = self._dynamic.patch(
            resource,
            body=dict(patch),
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        self._count_write()
        self.watched.remember(patched.to_dict())

    def list_pools(self, namespaces: tuple[str, ...] = ()) -> list[Manifest]:
        """Every WorkerPool in `namespaces`, or in the whole cluster when none are given."""
        resource = self._resource(API_VERSION, "WorkerPool")
        for _ in namespaces or ("",):
            self._request("list")
        found = (
            [resource.get(namespace=namespace) for namespace in namespaces]
            if namespaces
            else [resource.get()]
        )
        return [item.to_dict() for listing in found for item in listing.items]

    def label_pod(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) labels on a pod: the operator marks its own pod active."""
        resource = self._resource("v1", "Pod")
        self._request("patch")
        self._dynamic.patch(
            resource,
            body={"metadata": {"labels": dict(labels)}},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        self._count_write()

    def pod_labels(self, namespace: str, label_selector: str) -> dict[str, dict[str, str]]:
        """Name to labels of the pods in `namespace` that `label_selector` selects."""
        resource = self._resource("v1", "Pod")
        self._request("list")
        listing = resource.get(namespace=namespace, label_selector=label_selector)
        pods = [item.to_dict() for item in listing.items]
        return {str(pod["metadata"]["name"]): dict(pod["metadata"].get("labels") or {}) for pod in pods}

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One value of a Secret, decoded; the caller keeps it in memory only.

        A Secret the operator may not read raises CredentialsNotGrantedError: the chart names the
        Secrets it may read (rbac.queueCredentialSecrets), or a namespace admin granted it there.
        """
        try:
            secret = self.read("v1", "Secret", namespace, name)
        except ForbiddenError as error:
            raise CredentialsNotGrantedError(
                f"the operator may not read Secret {namespace}/{name}"
            ) from error
        if secret is None:
            raise LookupError(f"Secret {namespace}/{name} not found")
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(encoded).decode()


class CredentialsNotGrantedError(LookupError):
    """The operator may not read a Secret a pool names: nobody granted it in that namespace."""


_kube: Kube | None = None
_kube_lock = threading.Lock()
_rate_limit: tuple[float, int] | None = None


def configure(*, qps: float, burst: int) -> None:
    """Set the request-rate limit of the process's client; before its first use (at start-up)."""
    global _rate_limit  # noqa: PLW0603  (one setting per process, from the command line)
    RateLimiter(qps, burst)  # refuses a limit that admits nothing, before anything starts
    _rate_limit = (qps, burst)


def kube() -> Kube:
    """The process's one client, created on first use: its memories are shared by every handler."""
    global _kube  # noqa: PLW0603
    with _kube_lock:
        if _kube is None:
            _kube = Kube(rate_limiter=RateLimiter(*_rate_limit) if _rate_limit else None)
        return _kube
