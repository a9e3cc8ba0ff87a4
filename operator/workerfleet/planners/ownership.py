"""Whether a live child is this pool's, and whether it still holds what the operator applied: pure.

Ownership is the controller ownerReference: a child whose controller is not this pool (by UID) is
someone else's, whatever its name, and is neither applied nor deleted. Drift is read from the server's
own field bookkeeping (managedFields): every field the operator applies is owned by its field manager
until someone else changes it, which moves the field to their manager. So a child holds what was
applied exactly when the operator's managers still own every field of the applied manifest. This
needs no copy of the applied body, and the server's normalisation of values (quantities, defaults)
cannot look like drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

UNTRACKED_METADATA = frozenset({"name", "namespace", "uid"})
"""Metadata that identifies an object; managedFields does not record it."""


def controller_uid(body: Mapping[str, Any]) -> str | None:
    """The UID of the object's controller (the ownerReference with controller: true), if any."""
    for reference in (body.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("uid"))
    return None


def holder(body: Mapping[str, Any] | None) -> str:
    """Who has an object the pool does not control, as a person reads it: its controller, else its
    owners, else the field managers that wrote it (`kubectl-create`, `helm`, ...)."""
    if body is None:
        return "deleted again since: the next attempt looks again"
    metadata = body.get("metadata") or {}
    references = metadata.get("ownerReferences") or []
    controllers = [reference for reference in references if reference.get("controller")]
    if controllers or references:
        kind = "controlled" if controllers else "owned"
        named = ", ".join(
            f"{reference.get('kind')} {reference.get('name')}" for reference in controllers or references
        )
        return f"{kind} by {named}"
    managers = sorted(
        {str(entry["manager"]) for entry in metadata.get("managedFields") or [] if entry.get("manager")}
    )
    if managers:
        return f"managed by {', '.join(managers)}"
    return "no owner or field manager recorded"


def as_applied(fields: Mapping[str, Any], *, item: bool = False) -> dict[str, Any]:
    """An `Update` entry's field set as an `Apply` entry records it: without the "." that marks a map
    or a list itself as owned (an apply owns what it names inside them, so once someone else takes
    those nothing is left that looks owned whole). List items keep theirs, as applies record them."""
    result: dict[str, Any] = {}
    for key, child in fields.items():
        if key == ".":
            if item:
                result[key] = child
            continue
        if not child:
            result[key] = child  # a leaf, or a field owned whole
            continue
        stripped = as_applied(child, item=key.startswith(("k:", "v:", "i:")))
        if stripped:
            result[key] = stripped
    return result


def fields_of(body: Mapping[str, Any], manager: str) -> dict[str, Any] | None:
    """The union of the field sets `manager` owns on the object itself (status and other
    subresources aside), or None when it owns nothing there. fieldsV1 may be kept as JSON text."""
    union: dict[str, Any] | None = None
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1") or {}
        if isinstance(fields, str):
            fields = json.loads(fields)
        union = _merge(union or {}, fields)
    return union


def _merge(left: dict[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(left)
    for key, value in right.items():
        merged[key] = _merge(merged[key], value) if key in merged else value
    return merged


def holds_applied(body: Mapping[str, Any], manifest: Mapping[str, Any], manager: str) -> bool:
    """Whether `manager` still owns every field of `manifest` on the live object `body`."""
    owned = fields_of(body, manager)
    if owned is None:
        return False
    tracked = {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind")}
    metadata = {
        key: value for key, value in (manifest.get("metadata") or {}).items() if key not in UNTRACKED_METADATA
    }
    tracked["metadata"] = metadata
    if not metadata:
        del tracked["metadata"]
    return _covers(owned, tracked)


def _covers(node: Mapping[str, Any], value: Any) -> bool:
    """Whether the field set `node` owns every leaf of `value`. An empty node is a leaf: the field
    is owned as a whole (a scalar, or an atomic list or map)."""
    if not node:
        return True
    if isinstance(value, Mapping):
        for key, child in value.items():
            if child is None:
                continue
            owned = node.get(f"f:{key}")
            if owned is None or not _covers(owned, child):
                return False
        return True
    if isinstance(value, list):
        for item in value:
            owned = _element(node, item)
            if owned is None or not _covers(owned, item):
                return False
        return True
    return True


def _element(node: Mapping[str, Any], item: Any) -> Mapping[str, Any] | None:
    """The field set of one element of a keyed list (k:{...}) or a set (v:...), if owned."""
    for key, owned in node.items():
        if key.startswith("k:") and isinstance(item, Mapping):
            keys = json.loads(key[2:])
            present = [name for name in keys if name in item]
            # A key field the manifest leaves out was defaulted by the server (a port's protocol).
            if present and all(item[name] == keys[name] for name in present):
                return dict(owned)
        elif key.startswith("v:") and json.loads(key[2:]) == item:
            return dict(owned)
    return None
