"""The CRD checks that can run without an API server: defaulting, unknown fields, the OpenAPI schema
(with jsonschema), and the x-kubernetes-validations CEL rules (with a CEL interpreter).

It follows the API server's order: apply defaults, refuse unknown fields, validate the schema, and
evaluate CEL rules only on data the schema accepted. Values are typed for CEL by the schema, as the
API server does: a `type: number` field is a double even when written as `1`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from functools import cache
from itertools import pairwise
from typing import Any

import celpy
import jsonschema
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from jsonschema.exceptions import ValidationError

from workerfleet.api.crdgen import Kind, custom_resource_definition

PRESERVE = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS = "x-kubernetes-validations"


def openapi_schema(kind: Kind) -> dict[str, Any]:
    schema: dict[str, Any] = custom_resource_definition(kind)["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    return schema


def offline_errors(schema: dict[str, Any], document: Any) -> list[str]:
    """Why the API server would refuse `document`, as far as can be told offline; empty when accepted."""
    defaulted = apply_defaults(schema, document)
    errors = (
        unknown_fields(schema, _without_metadata(defaulted))
        + schema_errors(schema, defaulted)
        + list_type_errors(schema, defaulted)
    )
    if errors:
        return errors
    return rule_failures(schema, defaulted)


def _without_metadata(document: Any) -> Any:
    # The API server checks metadata as ObjectMeta, whatever the CRD says about it.
    if isinstance(document, dict):
        return {name: value for name, value in document.items() if name != "metadata"}
    return document


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with every missing defaulted field filled in, nested defaults included."""
    if isinstance(value, dict) and "properties" in schema:
        defaulted = dict(value)
        for name, child in schema["properties"].items():
            if name not in defaulted and "default" in child:
                defaulted[name] = copy.deepcopy(child["default"])
            if name in defaulted:
                defaulted[name] = apply_defaults(child, defaulted[name])
        return defaulted
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Fields the schema does not declare (kubectl's strict field validation refuses them)."""
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name, child_value in value.items():
            child_path = f"{path}.{name}" if path else name
            if name in properties:
                found += unknown_fields(properties[name], child_value, child_path)
            elif "additionalProperties" in schema:
                found += unknown_fields(schema["additionalProperties"], child_value, child_path)
            elif not schema.get(PRESERVE):
                found.append(f'unknown field "{child_path}"')
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += unknown_fields(schema["items"], item, f"{path}[{index}]")
    return found


def list_type_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Duplicates in a list of type set, and repeated keys in a list of type map."""
    found: list[str] = []
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                found += list_type_errors(child, value[name], f"{path}.{name}")
    elif isinstance(value, list) and "items" in schema:
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set":
            keys = [json.dumps(item, sort_keys=True) for item in value]
        elif list_type == "map":
            names = schema["x-kubernetes-list-map-keys"]
            keys = [
                json.dumps([item.get(name) for name in names]) for item in value if isinstance(item, dict)
            ]
        else:
            keys = []
        found += [f"{path}[{index}]: duplicate" for index, key in enumerate(keys) if key in keys[:index]]
        for index, item in enumerate(value):
            found += list_type_errors(schema["items"], item, f"{path}[{index}]")
    return found


def _anchored_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    # Go's RE2 `$` ends the text; Python's also matches before a final newline. Every pattern in the
    # CRDs is anchored at both ends, so a full match of its body is exactly the API server's test.
    if isinstance(instance, str) and not re.fullmatch(f"(?:{pattern[1:-1]})", instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft4Validator, {"pattern": _anchored_pattern}
)


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """OpenAPI schema violations (types, bounds, enums, required fields, patterns)."""
    return [
        f"{'.'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in _Validator(schema).iter_errors(value)
    ]


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    """The Kubernetes CEL list library's isSorted()."""
    items: list[Any] = list(values)
    return celtypes.BoolType(all(earlier <= later for earlier, later in pairwise(items)))


_CEL = celpy.Environment()


@cache
def _program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule), functions={"isSorted": _is_sorted})


def evaluate_rule(rule: str, schema: dict[str, Any], value: Any) -> bool:
    """Whether the CEL `rule` holds with `self` bound to `value` typed by `schema`."""
    try:
        result = _program(rule).evaluate({"self": to_cel(schema, value)})
    except CELEvalError:
        return False
    return result == celtypes.BoolType(True)


def rule_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of the x-kubernetes-validations rules that `value` breaks, with where they apply."""
    failures = [
        f"{path or '<root>'}: {validation['message']}"
        for validation in schema.get(VALIDATIONS, [])
        if not evaluate_rule(validation["rule"], schema, value)
    ]
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                failures += rule_failures(child, value[name], f"{path}.{name}" if path else name)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            failures += rule_failures(schema["items"], item, f"{path}[{index}]")
    return failures


def to_cel(schema: dict[str, Any], value: Any) -> celtypes.Value:
    """`value` as CEL sees it under `schema`."""
    if isinstance(value, dict) and ("properties" in schema or "additionalProperties" in schema):
        properties = schema.get("properties", {})
        return celtypes.MapType(
            {
                celtypes.StringType(name): to_cel(
                    properties.get(name, schema.get("additionalProperties", {})), item
                )
                for name, item in value.items()
            }
        )
    if isinstance(value, list) and "items" in schema:
        return celtypes.ListType([to_cel(schema["items"], item) for item in value])
    if schema.get("type") == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    return json_to_cel(value)


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of `schema` with its path: `.name` for properties, `[]` for items."""
    yield path or "<root>", schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")
