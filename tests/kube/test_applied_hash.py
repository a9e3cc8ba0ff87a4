"""Skipping writes that would change nothing hinges on a stable hash of what was applied."""

from __future__ import annotations

from workerfleet.kube.client import APPLIED_HASH_ANNOTATION, applied_hash, with_applied_hash

MANIFEST = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "p", "namespace": "n", "labels": {"a": "1", "b": "2"}},
    "data": {"k": "v"},
}


def test_hash_ignores_key_order_and_its_own_annotation() -> None:
    reordered = {
        "data": {"k": "v"},
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"namespace": "n", "labels": {"b": "2", "a": "1"}, "name": "p"},
    }
    assert applied_hash(MANIFEST) == applied_hash(reordered)
    assert applied_hash(with_applied_hash(MANIFEST)) == applied_hash(MANIFEST)


def test_any_change_changes_the_hash() -> None:
    changed = {**MANIFEST, "data": {"k": "w"}}
    assert applied_hash(changed) != applied_hash(MANIFEST)


def test_stamping_leaves_the_input_alone() -> None:
    stamped = with_applied_hash(MANIFEST)
    assert stamped["metadata"]["annotations"] == {APPLIED_HASH_ANNOTATION: applied_hash(MANIFEST)}
    assert "annotations" not in MANIFEST["metadata"]
