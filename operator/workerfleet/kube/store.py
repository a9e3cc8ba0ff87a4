"""What the operator already knows about objects, so that a reconcile costs requests only for news.

Two memories, both safe to share between handler threads:

- `WatchedObjects`: the newest version seen of each object of the kinds the operator watches anyway
  (WorkerPools, JobTypes, the pools' Deployments), from watch events and from the responses to its
  own writes. A read of such an object is answered from here once the object has been seen; an object
  not seen yet is read from the API server (and remembered), so start-up never decides on a partial
  picture. Versions only move forward: an older resourceVersion never replaces a newer one.
- `AppliedChildren`: for the children the operator does not watch (it may not list ServiceAccounts,
  ConfigMaps or Roles in every namespace), the hash it last applied or found applied, or that the
  child was found absent. Each memory is trusted for a bounded time, then verified with one read, so
  a child deleted or edited by hand is found again without a watch.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]
ObjectKey = tuple[str, str, str, str]
"""(apiVersion, kind, namespace, name)."""
WATCHED_KINDS = frozenset(
    {
        ("workerfleet.dev/v1alpha1", "WorkerPool"),
        ("workerfleet.dev/v1alpha1", "JobType"),
        ("apps/v1", "Deployment"),
    }
)
CHILD_RECHECK_SECONDS = 300.0
"""How long a remembered child is trusted before one read verifies it (jittered by up to a fifth more,
so that pools reconciled together at start-up do not all verify in the same second)."""


def object_key(body: Mapping[str, Any]) -> ObjectKey:
    metadata = body["metadata"]
    return (body["apiVersion"], body["kind"], metadata.get("namespace") or "", metadata["name"])


def _slim(body: Mapping[str, Any], manager: str | None = None) -> bytes:
    """The body as compact JSON, without most of managedFields: the server-side apply bookkeeping is
    most of a body's size. Only `manager`'s own entries are kept (their field sets as compact JSON
    text): they tell whether what it applied is still there.

    Kept as one bytes object rather than nested dicts: a few KiB in one allocation instead of hundreds
    of small objects, which, made during a catch-up among many short-lived ones, would pin Python's
    allocator arenas long after the short-lived ones are gone. A lookup decodes it (as fast as the
    deep copy it replaces)."""
    slim = dict(body)
    metadata = dict(slim.get("metadata") or {})
    entries = metadata.pop("managedFields", None) or []
    kept = [
        {
            "manager": entry["manager"],
            "operation": entry.get("operation"),
            "fieldsV1": json.dumps(entry.get("fieldsV1") or {}, sort_keys=True, separators=(",", ":")),
        }
        for entry in entries
        if manager is not None and entry.get("manager") == manager and not entry.get("subresource")
    ]
    if kept:
        metadata["managedFields"] = kept
    if "metadata" in slim:
        slim["metadata"] = metadata
    return json.dumps(slim, separators=(",", ":")).encode()


def _version(body: Mapping[str, Any] | None) -> int | None:
    """The resourceVersion as a number (it is etcd's revision), None when it is not one."""
    try:
        return int(((body or {}).get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


@dataclass
class _Seen:
    body: bytes | None
    """Compact JSON (see `_slim`); None: the object does not exist (a read found nothing, or a watch
    said DELETED)."""
    version: int | None


class WatchedObjects:
    """The newest version seen of every watched object."""

    def __init__(self, manager: str | None = None) -> None:
        """`manager`: the field manager whose managedFields entries are kept with each object."""
        self._lock = threading.Lock()
        self._seen: dict[ObjectKey, _Seen] = {}
        self._manager = manager

    @staticmethod
    def tracks(api_version: str, kind: str) -> bool:
        return (api_version, kind) in WATCHED_KINDS

    def remember(self, body: Mapping[str, Any]) -> None:
        """An object as a watch event or a write's response showed it."""
        self._put(object_key(body), _Seen(_slim(body, self._manager), _version(body)))

    def remember_deleted(self, body: Mapping[str, Any]) -> None:
        self._put(object_key(body), _Seen(None, _version(body)))

    def remember_read(self, key: ObjectKey, body: Mapping[str, Any] | None) -> None:
        """What a read returned: the object, or None when it does not exist."""
        self._put(key, _Seen(_slim(body, self._manager) if body is not None else None, _version(body)))

    def lookup(self, key: ObjectKey) -> tuple[bool, Manifest | None]:
        """(seen, a copy of the object or None when it is known not to exist)."""
        with self._lock:
            seen = self._seen.get(key)
        if seen is None:
            return False, None
        return True, json.loads(seen.body) if seen.body is not None else None

    def forget(self, key: ObjectKey) -> None:
        """Not known any more: the next read asks the API server."""
        with self._lock:
            self._seen.pop(key, None)

    def forget_named(self, namespace: str, names: set[str]) -> None:
        """Forget every object of any kind with one of `names` in `namespace` (a deleted pool's)."""
        with self._lock:
            for key in [key for key in self._seen if key[2] == namespace and key[3] in names]:
                del self._seen[key]

    def clear(self) -> None:
        """Forget everything: what a paused watch did not deliver is unknown."""
        with self._lock:
            self._seen.clear()

    def __len__(self) -> int:
        return len(self._seen)

    def _put(self, key: ObjectKey, new: _Seen) -> None:
        with self._lock:
            old = self._seen.get(key)
            if (
                old is not None
                and old.version is not None
                and new.version is not None
                and new.version < old.version
            ):
                return
            if new.body is None and new.version is None and old is not None and old.body is not None:
                # A read that found nothing is no news against an object a watch event has shown:
                # the read may have raced its creation. Ask again next time.
                del self._seen[key]
                return
            self._seen[key] = new


ABSENT = ""
"""The remembered hash of a child that was found not to exist."""


class AppliedChildren:
    """The applied hash (or absence) of each unwatched child, trusted for a bounded time."""

    def __init__(
        self,
        recheck_seconds: float = CHILD_RECHECK_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._lock = threading.Lock()
        self._children: dict[ObjectKey, tuple[str, float]] = {}
        self._recheck_seconds = recheck_seconds
        self._clock = clock
        self._jitter = jitter

    def remember(self, key: ObjectKey, applied_hash: str) -> None:
        """The child holds `applied_hash` (ABSENT: it does not exist), as a read or a write just showed."""
        until = self._clock() + self._recheck_seconds * (1.0 + 0.2 * self._jitter())
        with self._lock:
            self._children[key] = (applied_hash, until)

    def holds(self, key: ObjectKey, applied_hash: str) -> bool:
        """Whether the child is known, recently enough, to hold `applied_hash` (or to be ABSENT)."""
        with self._lock:
            known = self._children.get(key)
        return known is not None and known[0] == applied_hash and self._clock() < known[1]

    def forget(self, key: ObjectKey) -> None:
        with self._lock:
            self._children.pop(key, None)

    def forget_named(self, namespace: str, names: set[str]) -> None:
        """Forget every child of any kind with one of `names` in `namespace` (a deleted pool's)."""
        with self._lock:
            for key in [key for key in self._children if key[2] == namespace and key[3] in names]:
                del self._children[key]

    def clear(self) -> None:
        with self._lock:
            self._children.clear()

    def __len__(self) -> int:
        return len(self._children)
