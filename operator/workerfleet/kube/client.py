"""The one place that talks to the Kubernetes API: server-side apply, deletes, status, reads.

Writes are skipped when they would change nothing: every applied object carries a hash of what
was applied, and an object whose hash matches and whose applied fields are all still the operator's
(managedFields) is left alone, so a steady-state reconcile sends no write at all (only reads).
Children are written and deleted only when the pool is their controller. `writes` counts what was
sent, for tests and metrics.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from workerfleet.api.base import API_VERSION
from workerfleet.kube.rate_limit import RateLimiter
from workerfleet.kube.rest import ApiError, KindNotServedError, Rest
from workerfleet.kube.store import ABSENT, AppliedChildren, ObjectKey, WatchedObjects
from workerfleet.planners.children import ChildKey, Manifest
from workerfleet.planners.ownership import as_applied, controller_uid, holder, holds_applied
from workerfleet.planners.scope import secret_not_granted

logger = logging.getLogger(__name__)

FIELD_MANAGER = "workerfleet"
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
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
LIST_PAGE_SIZE = 500
"""Items per page of a list: one huge response would be held in memory whole."""
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


class NameConflictError(Exception):
    """An object with a child's name exists, and the pool is not its controller."""

    def __init__(self, kind: str, name: str, holder: str) -> None:
        super().__init__(f"{kind} {name} exists and is not this pool's ({holder})")
        self.kind = kind
        self.name = name
        self.holder = holder
        """Who has it instead, as `ownership.holder` words it."""


@dataclass(frozen=True)
class Pending:
    """A child to write: the manifest stamped with its hash."""

    manifest: Manifest
    key: ObjectKey
    desired: str
    uid: str | None
    """The UID of the live object the pool controls, None when it was found absent (it is created)."""
    owner_uid: str
    """The UID of the pool that controls it."""


def _hash_of(body: Mapping[str, Any] | None) -> str:
    return str(((body or {}).get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION))


class Kube:
    """Typed-enough access to the handful of kinds workerfleet reads and writes.

    Every request waits for the rate limiter first; reads of watched kinds are answered from what the
    watches showed (`watched`), and children known to hold what would be applied cost no request.
    """

    def __init__(self, rest: Rest | None = None, rate_limiter: RateLimiter | None = None) -> None:
        self._rest = rest or Rest(pool_size=CONNECTION_POOL_SIZE)
        self._lock = threading.Lock()
        self._limiter = rate_limiter or RateLimiter()
        self.watched = WatchedObjects(FIELD_MANAGER)
        self.applied = AppliedChildren()
        self._unverifiable: dict[ObjectKey, str] = {}
        """Children whose applied hash cannot be judged by field ownership (see `write`)."""
        self.writes = 0

    def _request(self, verb: str) -> None:
        """Wait until the rate limit lets one request go, and count it in the operator's metrics."""
        API_THROTTLED_SECONDS.inc(self._limiter.acquire())
        API_REQUESTS.labels(verb).inc()

    def _send(self, verb: str, method: str, path: str, **request: Any) -> Any:
        """One request, after the rate limit lets it go."""
        self._request(verb)
        return self._rest.request(method, path, **request)

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
            found: Manifest = self._send("get", "GET", self._rest.path(api_version, kind, namespace, name))
        except KindNotServedError:
            return None
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return found

    def check(self, manifest: Mapping[str, Any], owner_uid: str, *, verify: bool = False) -> Pending | None:
        """What applying `manifest` for the owner with `owner_uid` would need to write: None when the
        live child holds it already (the same hash, and every applied field still the operator's).

        Raises NameConflictError when an object of that name exists and the owner is not its controller:
        nothing is written to it. `verify`: read an unwatched child even when it is remembered as applied
        (the periodic resync, which finds hand edits).
        """
        metadata = manifest["metadata"]
        stamped = with_applied_hash(manifest)
        desired = stamped["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        key: ObjectKey = (manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"])
        watched = self.watched.tracks(manifest["apiVersion"], manifest["kind"])
        if not watched and not verify and self.applied.holds(key, desired):
            return None
        live = self.watched.lookup(key)[1] if watched else None
        if live is None:
            # Created only after a read of the server itself: the watches see only objects labelled as
            # a pool's, so someone else's object of the name is not in their memory.
            live = self.read(*key)
            if watched:
                self.watched.remember_read(key, live)
        if live is not None and controller_uid(live) != owner_uid:
            # The watches keep only the operator's own managedFields: the holder is named from a read.
            raise self._name_conflict(key, live if not watched else self.read(*key) or live, watched)
        if live is not None and _hash_of(live) == desired and self._holds(key, live, stamped, desired):
            if not watched:
                self.applied.remember(key, desired)
            return None
        return Pending(
            stamped, key, desired, live["metadata"]["uid"] if live is not None else None, owner_uid
        )

    def _name_conflict(
        self, key: ObjectKey, live: Mapping[str, Any] | None, watched: bool
    ) -> NameConflictError:
        # Not remembered: the next attempt reads again (a watch may never show the other object go).
        (self.watched if watched else self.applied).forget(key)
        return NameConflictError(key[1], key[3], holder(live))

    def _holds(self, key: ObjectKey, live: Mapping[str, Any], stamped: Manifest, desired: str) -> bool:
        with self._lock:
            unverifiable = self._unverifiable.get(key) == desired
        return unverifiable or holds_applied(live, stamped, FIELD_MANAGER)

    def write(self, pending: Pending) -> None:
        """Write what `check` found missing. A child found absent is created, so an object someone else
        made under its name since the check is refused by the server (NameConflictError), never merged
        into. A child the pool controls is server-side applied with force (the fields are the
        operator's to set, so a hand edit of one of them is taken back) and with its UID as a
        precondition, so one deleted and made again by someone else since the check is not taken over."""
        if pending.uid is None:
            existing = self._create(pending)
            if existing is None:
                return
            pending = replace(pending, uid=existing)  # the pool's own after all: updated like any other
        body = {**pending.manifest, "metadata": {**pending.manifest["metadata"], "uid": pending.uid}}
        applied = self._send(
            "patch",
            "PATCH",
            self._rest.path(*pending.key),
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
        )
        self._count_write()
        self._remember_written(pending, applied)

    def _create(self, pending: Pending) -> str | None:
        """Create the child (its fields then recorded as applied, see `_record_as_applied`): None. When
        the name is taken by an object the pool controls (a memory that lagged), that object's UID;
        by anyone else's, NameConflictError, and nothing is written."""
        api_version, kind, namespace, _ = pending.key
        try:
            created: Manifest = self._send(
                "create",
                "POST",
                self._rest.path(api_version, kind, namespace),
                query={"fieldManager": FIELD_MANAGER},
                body=pending.manifest,
            )
        except ApiError as error:
            if error.status != 409:
                raise
            live = self.read(*pending.key)
            if live is not None and controller_uid(live) == pending.owner_uid:
                return str(live["metadata"]["uid"])
            raise self._name_conflict(pending.key, live, self.watched.tracks(api_version, kind)) from error
        self._count_write()
        self._remember_written(pending, self._record_as_applied(created))
        return None

    def _record_as_applied(self, created: Manifest) -> Manifest:
        """Turn the create's managedFields entry (operation Update) into an Apply entry of the same
        manager, as if the child had been server-side applied: later applies then remove what they
        leave out (left an Update entry, it would keep every field it set), and a field someone else
        takes leaves nothing behind that looks owned (`as_applied`). One JSON patch, guarded by the UID
        and the entry it rewrites; kubectl upgrades client-side-applied objects the same way."""
        metadata = created["metadata"]
        entries = metadata.get("managedFields") or []
        found = [
            index
            for index, entry in enumerate(entries)
            if entry.get("manager") == FIELD_MANAGER
            and entry.get("operation") == "Update"
            and not entry.get("subresource")
        ]
        if not found:
            return created
        entry = f"/metadata/managedFields/{found[0]}"
        patch = [
            {"op": "test", "path": "/metadata/uid", "value": metadata["uid"]},
            {"op": "test", "path": f"{entry}/manager", "value": FIELD_MANAGER},
            {"op": "test", "path": f"{entry}/operation", "value": "Update"},
            {"op": "replace", "path": f"{entry}/operation", "value": "Apply"},
            {
                "op": "replace",
                "path": f"{entry}/fieldsV1",
                "value": as_applied(entries[found[0]]["fieldsV1"]),
            },
        ]
        api_version, kind = created["apiVersion"], created["kind"]
        try:
            recorded: Manifest = self._send(
                "patch",
                "PATCH",
                self._rest.path(api_version, kind, metadata.get("namespace") or "", metadata["name"]),
                body=patch,
                content_type=JSON_PATCH,
            )
        except ApiError as error:
            # Changed or gone since the create (the tests failed): the next check judges what is there.
            logger.warning("%s %s: created, not recorded as applied (%s)", kind, metadata["name"], error)
            return created
        self._count_write()
        return recorded

    def _remember_written(self, pending: Pending, applied: Manifest) -> None:
        """What a write left: the object itself for a watched kind, the applied hash for the others."""
        manifest = pending.manifest
        with self._lock:
            if holds_applied(applied, manifest, FIELD_MANAGER):
                self._unverifiable.pop(pending.key, None)
            else:
                # The server does not record some applied field (a CRD that prunes it): judging drift
                # by it would rewrite the child on every resync, so only the hash is compared.
                logger.warning("%s %s: applied fields not all recorded", manifest["kind"], pending.key[3])
                self._unverifiable[pending.key] = pending.desired
        if self.watched.tracks(manifest["apiVersion"], manifest["kind"]):
            self.watched.remember(applied)
        else:
            self.applied.remember(pending.key, pending.desired)

    def delete(self, namespace: str, key: ChildKey, owner_uid: str) -> bool:
        """Delete the child if it exists and the owner with `owner_uid` is its controller; True if a
        delete was sent. An object of that name that someone else controls is left alone. The delete
        carries the UID as a precondition, so an object re-created under the name in between survives."""
        object_key: ObjectKey = (key.api_version, key.kind, namespace, key.name)
        watched = self.watched.tracks(key.api_version, key.kind)
        if not watched and self.applied.holds(object_key, ABSENT):
            return False
        live = self.get(*object_key) if watched else self.read(*object_key)
        if live is None or controller_uid(live) != owner_uid:
            if not watched:
                self.applied.remember(object_key, ABSENT)  # nothing of the pool's under this name
            return False
        try:
            self._send(
                "delete",
                "DELETE",
                self._rest.path(*object_key),
                body={"preconditions": {"uid": live["metadata"]["uid"]}},
            )
        except ApiError as error:
            if error.status not in (404, 409):
                raise
            self._gone(object_key, watched)  # gone, or replaced by an object the next read judges
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
        patched = self._send(
            "patch",
            "PATCH",
            self._rest.path(API_VERSION, "WorkerPool", namespace, name, "status"),
            body={"status": dict(status)},
            content_type=MERGE_PATCH,
        )
        self._count_write()
        self.watched.remember(patched)

    def claim_job_type_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str | None:
        """A status merge patch that names the resourceVersion it was planned on: the new
        resourceVersion, or None when the JobType changed since (409: another writer came first)."""
        try:
            patched = self._send(
                "patch",
                "PATCH",
                self._rest.path(API_VERSION, "JobType", namespace, name, "status"),
                body=dict(patch),
                content_type=MERGE_PATCH,
            )
        except ApiError as error:
            if error.status == 409:
                return None
            raise
        self._count_write()
        self.watched.remember(patched)
        return str(patched["metadata"]["resourceVersion"])

    def patch_job_type_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        patched = self._send(
            "patch",
            "PATCH",
            self._rest.path(API_VERSION, "JobType", namespace, name, "status"),
            body={"status": dict(status)},
            content_type=MERGE_PATCH,
        )
        self._count_write()
        self.watched.remember(patched)

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
        path = self._rest.path("authorization.k8s.io/v1", "SubjectAccessReview")
        result = self._send("create", "POST", path, body=review)
        return bool((result.get("status") or {}).get("allowed"))

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
        patched = self._send(
            "patch",
            "PATCH",
            self._rest.path(API_VERSION, "WorkerPool", namespace, name),
            body=dict(patch),
            content_type=MERGE_PATCH,
        )
        self._count_write()
        self.watched.remember(patched)

    def list_pools(self, namespaces: tuple[str, ...] = ()) -> list[Manifest]:
        """Every WorkerPool in `namespaces`, or in the whole cluster when none are given."""
        return [
            pool
            for namespace in namespaces or ("",)
            for pool in self._list(self._rest.path(API_VERSION, "WorkerPool", namespace))
        ]

    def _list(self, path: str, **query: str) -> list[Manifest]:
        """Every item of a collection, a page at a time."""
        items: list[Manifest] = []
        page: dict[str, str] = {"limit": str(LIST_PAGE_SIZE), **query}
        while True:
            listing = self._send("list", "GET", path, query=page)
            items.extend(listing.get("items") or [])
            continue_token = (listing.get("metadata") or {}).get("continue")
            if not continue_token:
                return items
            page = {**page, "continue": continue_token}

    def apply_cluster_object(self, manifest: Mapping[str, Any], field_manager: str) -> None:
        """Server-side apply a cluster-scoped object (the metrics APIService) as `field_manager`, taking
        over fields another manager (an older chart release) set."""
        self._send(
            "patch",
            "PATCH",
            self._rest.path(manifest["apiVersion"], manifest["kind"], "", manifest["metadata"]["name"]),
            query={"fieldManager": field_manager, "force": "true"},
            body=dict(manifest),
            content_type="application/apply-patch+yaml",
        )
        self._count_write()

    def delete_exactly(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> bool:
        """Delete the object with this UID (a precondition: one made again under the name survives);
        False when it is already gone or was replaced."""
        try:
            self._send(
                "delete",
                "DELETE",
                self._rest.path(api_version, kind, namespace, name),
                body={"preconditions": {"uid": uid}},
            )
        except ApiError as error:
            if error.status in (404, 409):
                return False
            raise
        self._count_write()
        return True

    def label_pod(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) labels on a pod: the operator marks its own pod active."""
        self._send(
            "patch",
            "PATCH",
            self._rest.path("v1", "Pod", namespace, name),
            body={"metadata": {"labels": dict(labels)}},
            content_type=MERGE_PATCH,
        )
        self._count_write()

    def pods(self, namespace: str, label_selector: str) -> list[Manifest]:
        """The pods in `namespace` that `label_selector` selects, whole."""
        return self._list(self._rest.path("v1", "Pod", namespace), labelSelector=label_selector)

    def annotate_pod(
        self, namespace: str, name: str, annotations: Mapping[str, str], field_manager: str
    ) -> None:
        """Set annotations on a pod (the workers' pod-deletion-cost), as `field_manager`."""
        self._send(
            "patch",
            "PATCH",
            self._rest.path("v1", "Pod", namespace, name),
            query={"fieldManager": field_manager},
            body={"metadata": {"annotations": dict(annotations)}},
            content_type=MERGE_PATCH,
        )
        self._count_write()

    def set_config_map_key(self, namespace: str, name: str, key: str, value: str, field_manager: str) -> bool:
        """Set one key of an existing ConfigMap as `field_manager` (so the applier of the others leaves it
        be); False when the ConfigMap does not exist yet."""
        try:
            self._send(
                "patch",
                "PATCH",
                self._rest.path("v1", "ConfigMap", namespace, name),
                query={"fieldManager": field_manager},
                body={"data": {key: value}},
                content_type=MERGE_PATCH,
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        self._count_write()
        return True

    def pod_labels(self, namespace: str, label_selector: str) -> dict[str, dict[str, str]]:
        """Name to labels of the pods in `namespace` that `label_selector` selects."""
        pods = self._list(self._rest.path("v1", "Pod", namespace), labelSelector=label_selector)
        return {str(pod["metadata"]["name"]): dict(pod["metadata"].get("labels") or {}) for pod in pods}

    def whoami(self) -> str:
        """The username the API server sees for these credentials (a SelfSubjectReview)."""
        review = self._send(
            "create",
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        return str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "unknown")

    def record_event(self, involved: Mapping[str, Any], *, reason: str, message: str, component: str) -> None:
        """A Normal Event on `involved` (an object as read), from `component`."""
        metadata = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._send(
            "create",
            "POST",
            f"/api/v1/namespaces/{metadata['namespace']}/events",
            body={
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
                "involvedObject": {
                    "apiVersion": involved["apiVersion"],
                    "kind": involved["kind"],
                    "name": metadata["name"],
                    "namespace": metadata["namespace"],
                    "uid": metadata.get("uid"),
                },
                "type": "Normal",
                "reason": reason,
                "message": message,
                "source": {"component": component},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One value of a Secret, decoded; the caller keeps it in memory only.

        A Secret the operator may not read raises CredentialsNotGrantedError: the chart names the
        Secrets it may read (rbac.queueCredentialSecrets), or a namespace admin granted it there.
        """
        secret = self._read_secret(namespace, name)
        if secret is None:
            raise LookupError(f"Secret {namespace}/{name} not found")
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(encoded).decode()

    def secret_readable(self, namespace: str, name: str) -> bool:
        """Whether the operator may read this Secret (it need not exist): where it may not, nobody opted
        the namespace in to queue credentials, so KEDA is not to be given it either."""
        try:
            self._read_secret(namespace, name)
        except CredentialsNotGrantedError:
            return False
        return True

    def _read_secret(self, namespace: str, name: str) -> Manifest | None:
        try:
            return self.read("v1", "Secret", namespace, name)
        except ApiError as error:
            if error.status != 403:
                raise
            raise CredentialsNotGrantedError(secret_not_granted(namespace, [name])) from error


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
