"""The committed CRDs are what the models generate, and they are structural, bounded and documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api.crd_checks import evaluate_rule, openapi_schema, rule_failures, schema_errors, walk
from workerfleet.api import crdgen
from workerfleet.api.base import MAX_COUNT
from workerfleet.api.crdgen import JOB_TYPE, KINDS, WORKER_POOL, Kind, custom_resource_definition

REPOSITORY = Path(__file__).resolve().parents[2]
CRDS = REPOSITORY / "crds"
TYPE_MARKERS = ("type", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")
NON_STRUCTURAL_KEYS = ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "nullable", "additionalItems")
PRINTER_TYPES = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}

kinds = pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.kind)


def test_committed_crds_match_the_models() -> None:
    generated = crdgen.render_all()
    committed = {path.name: path.read_text() for path in sorted(CRDS.glob("*.yaml"))}
    assert sorted(committed) == sorted(generated), (
        "crds/ holds other files than the models make: run `make crds`"
    )
    for name, text in generated.items():
        assert committed[name] == text, f"crds/{name} is stale: run `make crds` and commit the result"


def test_generating_twice_gives_the_same_text(tmp_path: Path) -> None:
    assert crdgen.main(["--output-dir", str(tmp_path)]) == 0
    first = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert crdgen.main(["--output-dir", str(tmp_path)]) == 0
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == first
    assert set(first) == {kind.file_name for kind in KINDS} | {
        "kopf.dev_clusterkopfpeerings.yaml",
        "kopf.dev_kopfpeerings.yaml",
    }


@pytest.mark.parametrize(("kind", "scope"), crdgen.PEERING_KINDS)
def test_peering_crds_are_what_kopf_reads_and_writes(kind: str, scope: str) -> None:
    """kopf finds them by group kopf.dev, version v1 and plural; it writes free-form status records
    by patching the object itself, so there must be no status subresource."""
    body = yaml.safe_load((CRDS / f"kopf.dev_{kind.lower()}s.yaml").read_text())
    spec = body["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["plural"]) == ("kopf.dev", scope, f"{kind.lower()}s")
    [version] = spec["versions"]
    assert version["name"] == "v1"
    assert version["served"]
    assert version["storage"]
    assert "subresources" not in version
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True


@kinds
def test_committed_yaml_parses_to_the_generated_object(kind: Kind) -> None:
    assert yaml.safe_load((CRDS / kind.file_name).read_text()) == custom_resource_definition(kind)


def _non_root_nodes(kind: Kind) -> list[tuple[str, dict[str, Any]]]:
    return [(path, node) for path, node in walk(openapi_schema(kind)) if path != "<root>"]


def _free_form_paths(kind: Kind) -> list[str]:
    return [
        path for path, node in walk(openapi_schema(kind)) if node.get("x-kubernetes-preserve-unknown-fields")
    ]


@kinds
def test_every_node_is_typed(kind: Kind) -> None:
    untyped = [
        path for path, node in walk(openapi_schema(kind)) if not any(key in node for key in TYPE_MARKERS)
    ]
    assert untyped == []


@kinds
def test_no_json_schema_leftovers(kind: Kind) -> None:
    leftovers = [
        f"{path}: {key}"
        for path, node in walk(openapi_schema(kind))
        for key in NON_STRUCTURAL_KEYS
        if key in node
    ]
    assert leftovers == []


@kinds
def test_every_property_is_described(kind: Kind) -> None:
    # The API server forbids anything but name constraints under metadata; explain shows ObjectMeta's docs.
    undocumented = [
        path
        for path, node in _non_root_nodes(kind)
        if not path.endswith("[]")
        and not path.startswith(".metadata")
        and not node.get("description", "").strip()
    ]
    assert undocumented == []


@kinds
def test_every_string_and_list_is_bounded(kind: Kind) -> None:
    # Bounds keep CEL's estimated cost within the API server's budget, and objects within reason.
    # Inside free-form objects (the pod template) the Pod API's own validation applies.
    free_form = _free_form_paths(kind)
    unbounded = [
        path
        for path, node in _non_root_nodes(kind)
        if not any(path.startswith(prefix) and path != prefix for prefix in free_form)
        and (
            (node.get("type") == "array" and "maxItems" not in node)
            or (
                node.get("type") == "string"
                and "maxLength" not in node
                and "enum" not in node
                and node.get("format") != "date-time"
                and not path.startswith(".metadata")
                and path not in (".apiVersion", ".kind")
            )
        )
    ]
    assert unbounded == []


@kinds
def test_every_number_is_bounded(kind: Kind) -> None:
    # A number without a range lets a manifest (or a status write) say what nothing downstream can
    # hold; inside free-form objects the Pod API's own validation applies.
    free_form = _free_form_paths(kind)
    unbounded = [
        path
        for path, node in _non_root_nodes(kind)
        if not any(path.startswith(prefix) and path != prefix for prefix in free_form)
        and node.get("type") in ("integer", "number")
        and not ("minimum" in node and "maximum" in node and node["maximum"] <= MAX_COUNT)
        and not path.startswith(".metadata")
    ]
    assert unbounded == []  # and the API server refuses a maximum past 2^53 - 1


@kinds
def test_patterns_are_anchored_at_both_ends(kind: Kind) -> None:
    patterns = [node["pattern"] for _, node in walk(openapi_schema(kind)) if "pattern" in node]
    assert patterns
    assert all(pattern.startswith("^") and pattern.endswith("$") for pattern in patterns)


@kinds
def test_list_types_fit_their_items(kind: Kind) -> None:
    for path, node in walk(openapi_schema(kind)):
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set":
            assert node["items"]["type"] in ("string", "integer", "boolean"), path
        elif list_type == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path


@kinds
def test_every_rule_has_a_message_and_a_valid_field_path(kind: Kind) -> None:
    rules = [
        (path, node, rule)
        for path, node in walk(openapi_schema(kind))
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert rules
    for path, node, rule in rules:
        assert rule["message"].strip(), path
        if "fieldPath" in rule:
            target = node
            for name in rule["fieldPath"].lstrip(".").split("."):
                target = target["properties"][name]
            assert "type" in target, f"{path}: {rule['fieldPath']}"


@kinds
def test_defaults_are_valid_under_their_own_schema(kind: Kind) -> None:
    defaulted = [(path, node) for path, node in walk(openapi_schema(kind)) if "default" in node]
    assert defaulted
    for path, node in defaulted:
        assert schema_errors(node, node["default"]) == [], path
        assert rule_failures(node, node["default"]) == [], path


def _schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    """The schema of the field a JSONPath names; a filter (`[?(@.type=="Ready")]`) selects list items."""
    node = schema
    path = re.sub(r"\[\?\(@\.\w+==\"[^\"]*\"\)\]", "[]", json_path)
    for name in path.lstrip(".").split("."):
        node = node["properties"][name.removesuffix("[]")]
        if name.endswith("[]"):
            node = node["items"]
    return node


@kinds
def test_printer_columns_point_at_fields_of_their_type(kind: Kind) -> None:
    schema = openapi_schema(kind)
    for column in kind.printer_columns:
        if column.json_path == ".metadata.creationTimestamp":
            assert column.type == "date"
            continue
        assert PRINTER_TYPES[_schema_at(schema, column.json_path)["type"]] == column.type, column.name


def test_worker_pool_scale_subresource_reads_replicas_and_selector() -> None:
    version = custom_resource_definition(WORKER_POOL)["spec"]["versions"][0]
    scale = version["subresources"]["scale"]
    schema = openapi_schema(WORKER_POOL)
    assert _schema_at(schema, scale["specReplicasPath"])["type"] == "integer"
    assert _schema_at(schema, scale["statusReplicasPath"])["type"] == "integer"
    assert _schema_at(schema, scale["labelSelectorPath"])["type"] == "string"
    assert version["subresources"]["status"] == {}


def test_worker_pool_columns_show_rollout_and_queue() -> None:
    names = [column.name for column in WORKER_POOL.printer_columns if column.priority == 0]
    assert names == ["Ready", "Replicas", "Available", "Phase", "Step", "Weight", "Queue Depth", "Age"]


def test_job_type_columns_and_selectable_lane_and_priority() -> None:
    names = [column.name for column in JOB_TYPE.printer_columns if column.priority == 0]
    assert names == ["Lane", "Priority", "Timeout", "Max Attempts", "Accepted", "Next Run", "Age"]
    version = custom_resource_definition(JOB_TYPE)["spec"]["versions"][0]
    assert version["selectableFields"] == [{"jsonPath": ".spec.lane"}, {"jsonPath": ".spec.priority"}]
    assert _schema_at(openapi_schema(JOB_TYPE), ".spec.lane")["type"] == "string"
    assert _schema_at(openapi_schema(JOB_TYPE), ".spec.priority")["enum"] == ["high", "normal", "low"]


@kinds
def test_names_short_names_and_category(kind: Kind) -> None:
    crd = custom_resource_definition(kind)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{kind.plural}.workerfleet.dev"
    assert names["categories"] == ["workerfleet"]
    assert names["kind"] == kind.kind
    assert names["singular"] == kind.kind.lower()
    assert {WORKER_POOL.kind: ["wp"], JOB_TYPE.kind: ["jt"]}[kind.kind] == names["shortNames"]
    assert crd["spec"]["scope"] == "Namespaced"
    assert [version["name"] for version in crd["spec"]["versions"]] == ["v1alpha1"]


def test_status_is_strictly_typed() -> None:
    # kopf keeps its bookkeeping in annotations, so nothing in status needs to pass unchecked.
    for kind in KINDS:
        status = openapi_schema(kind)["properties"]["status"]
        assert not [path for path, node in walk(status) if node.get("x-kubernetes-preserve-unknown-fields")]


def test_conditions_are_a_map_keyed_by_type() -> None:
    for kind in KINDS:
        conditions = openapi_schema(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert conditions["items"]["required"] == [
            "type",
            "status",
            "lastTransitionTime",
            "reason",
            "message",
        ]


def test_scalar_defaults_are_spelled_out_for_kubectl_explain() -> None:
    polling = _schema_at(openapi_schema(WORKER_POOL), ".spec.autoscaling.pollingIntervalSeconds")
    assert polling["default"] == 10
    assert polling["description"].endswith("Defaults to 10.")
    retry_on = _schema_at(openapi_schema(JOB_TYPE), ".spec.retry.retryOn")
    assert retry_on["description"].endswith("Defaults to transient, timeout, unknown.")


def test_the_wildcard_rule_is_the_cel_the_api_server_runs() -> None:
    resources = _schema_at(openapi_schema(JOB_TYPE), ".spec.permissions")["items"]["properties"]["resources"]
    [rule] = resources["items"]["x-kubernetes-validations"]
    assert rule["reason"] == "FieldValueForbidden"
    assert evaluate_rule(rule["rule"], resources["items"], "configmaps")
    assert not evaluate_rule(rule["rule"], resources["items"], "pods/*")
