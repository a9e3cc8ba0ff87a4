"""An in-memory stand-in for the API server's object endpoints, for tests of what the client writes.

It keeps objects by path, answers GET, POST (create), PATCH (server-side apply, JSON patch) and
DELETE as the API server does where the client's safety depends on it: a create of a taken name is
409, an apply or delete whose UID precondition does not match is 409, an apply creates what is absent.
Every request is recorded; `someone_creates` stands in for another client acting between requests.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from workerfleet.kube.rest import ApiError

Manifest = dict[str, Any]


def _fields(value: Any) -> dict[str, Any]:
    """A managedFields field set of `value` (maps key by key; lists and scalars owned whole)."""
    if isinstance(value, Mapping):
        return {f"f:{key}": _fields(child) for key, child in value.items()}
    return {}


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[str, Manifest] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self._uids = itertools.count(1)

    def path(self, api_version: str, kind: str, namespace: str = "", name: str = "") -> str:
        return "/".join(part for part in (api_version, kind, namespace, name) if part)

    def someone_creates(self, manifest: Manifest, manager: str = "kubectl-create") -> Manifest:
        metadata = manifest["metadata"]
        key = self.path(
            manifest["apiVersion"], manifest["kind"], metadata.get("namespace", ""), metadata["name"]
        )
        self.objects[key] = self._stored(manifest, manager, "Update")
        return copy.deepcopy(self.objects[key])

    def _stored(self, manifest: Manifest, manager: str, operation: str, uid: str | None = None) -> Manifest:
        stored = copy.deepcopy(manifest)
        body = {key: value for key, value in stored.items() if key not in ("apiVersion", "kind")}
        body["metadata"] = {
            k: v for k, v in stored["metadata"].items() if k not in ("name", "namespace", "uid")
        }
        stored["metadata"]["uid"] = uid or f"uid-{next(self._uids)}"
        stored["metadata"]["managedFields"] = [
            {"manager": manager, "operation": operation, "fieldsV1": _fields(body)}
        ]
        return stored

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        self.requests.append((method, path, copy.deepcopy(body)))
        query = query or {}
        if method == "GET":
            if path not in self.objects:
                raise ApiError(404, "NotFound", f"{path} not found", None)
            return copy.deepcopy(self.objects[path])
        if method == "POST":
            key = f"{path}/{body['metadata']['name']}"
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f"{key} already exists", None)
            self.objects[key] = self._stored(body, query["fieldManager"], "Update")
            return copy.deepcopy(self.objects[key])
        live = self.objects.get(path)
        if method == "DELETE":
            if live is None:
                raise ApiError(404, "NotFound", f"{path} not found", None)
            if (body or {}).get("preconditions", {}).get("uid") not in (None, live["metadata"]["uid"]):
                raise ApiError(409, "Conflict", "Precondition failed: UID", None)
            del self.objects[path]
            return {}
        if content_type == "application/apply-patch+yaml":
            uid = body["metadata"].get("uid")
            if uid is not None and (live is None or live["metadata"]["uid"] != uid):
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}", None)
            applied = self._stored(
                body, query["fieldManager"], "Apply", uid or (live or {}).get("metadata", {}).get("uid")
            )
            self.objects[path] = applied
            return copy.deepcopy(applied)
        if content_type == "application/json-patch+json":
            assert live is not None, path
            patched = copy.deepcopy(live)
            for operation in body:
                *parents, last = operation["path"].strip("/").split("/")
                target: Any = patched
                for part in parents:
                    target = target[int(part)] if isinstance(target, list) else target[part]
                index: Any = int(last) if isinstance(target, list) else last
                if operation["op"] == "test" and target[index] != operation["value"]:
                    raise ApiError(422, "Invalid", f"test failed at {operation['path']}", None)
                if operation["op"] == "replace":
                    target[index] = operation["value"]
            self.objects[path] = patched
            return copy.deepcopy(patched)
        raise AssertionError(f"not served here: {method} {path} {content_type}")
