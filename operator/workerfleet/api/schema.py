"""Turn a model's JSON Schema into a structural OpenAPI v3 schema, the only kind a CRD may carry.

Pydantic speaks JSON Schema 2020-12; the API server wants every node typed and self-contained: no
`$ref`, no `anyOf` for optional fields, no `additionalProperties: false`, and exclusive bounds as
booleans. Anything this module does not know how to translate is an error, never passed through.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from workerfleet.api.base import VALIDATIONS_KEY

PRESERVE_UNKNOWN_FIELDS = "x-kubernetes-preserve-unknown-fields"

# Keywords a structural schema may carry as they come out of pydantic.
_KEPT = frozenset(
    {
        "type",
        "required",
        "enum",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "maxProperties",
        VALIDATIONS_KEY,
        PRESERVE_UNKNOWN_FIELDS,
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    }
)
_DROPPED = frozenset({"title"})
_EXCLUSIVE_BOUNDS = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}
_NULL = {"type": "null"}


class SchemaError(ValueError):
    """The model uses a construct with no structural equivalent."""


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema with every `$ref` inlined and every node translated for the API server."""
    generated = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = generated.pop("$defs", {})
    return _translate(generated, definitions, "")


def _translate(node: dict[str, Any], definitions: dict[str, Any], path: str) -> dict[str, Any]:
    translated: dict[str, Any] = {}
    for key, value in _inline(node, definitions, path).items():
        if key in _DROPPED or (key == "default" and value in (None, [], {})):
            continue  # an absent optional field already means "none" or "empty"
        if key == "properties":
            translated[key] = {
                name: _translate(child, definitions, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            translated[key] = _translate(value, definitions, f"{path}[]")
        elif key == "additionalProperties" and isinstance(value, dict):
            translated[key] = _translate(value, definitions, f"{path}{{}}")
        else:
            translated.update(_translate_keyword(key, value, path))
    if "description" in translated and "default" in translated:
        translated["description"] = _with_default(translated["description"], translated["default"])
    return translated


def _translate_keyword(key: str, value: Any, path: str) -> dict[str, Any]:
    """One keyword without subschemas, as the structural keyword(s) that mean the same."""
    if key == "additionalProperties":
        # true: a free-form object the API server keeps as is; false (extra="forbid") is implied.
        return {PRESERVE_UNKNOWN_FIELDS: True} if value is True else {}
    if key in _EXCLUSIVE_BOUNDS:
        return {_EXCLUSIVE_BOUNDS[key]: value, key: True}
    if key == "const":
        return {"enum": [value]}
    if key == "description":
        return {key: " ".join(value.split())}
    if key == "default" or key in _KEPT:
        return {key: value}
    raise SchemaError(f"{path or '<root>'}: no structural translation for {key!r}")


def _with_default(description: str, default: Any) -> str:
    """`kubectl explain` shows descriptions but not defaults, so scalar defaults are spelled out."""
    if isinstance(default, bool):
        shown = str(default).lower()
    elif isinstance(default, int | float) or (isinstance(default, str) and default):
        shown = str(default)
    elif isinstance(default, list) and all(isinstance(item, str) for item in default):
        shown = ", ".join(default)
    else:
        return description
    return f"{description} Defaults to {shown}."


def _inline(node: dict[str, Any], definitions: dict[str, Any], path: str) -> dict[str, Any]:
    """Replace `$ref`, single-entry `allOf` and `anyOf: [X, null]` by X, keeping the node's own keys."""
    while True:
        if "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[-1]]
            node = _merge(target, _without(node, "$ref"))
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = _merge(node["allOf"][0], _without(node, "allOf"))
        elif "anyOf" in node:
            options = [option for option in node["anyOf"] if option != _NULL]
            if len(options) != 1:
                raise SchemaError(f"{path}: a union of {len(options)} types has no structural form")
            node = _merge(options[0], _without(node, "anyOf"))
        else:
            return node


def _merge(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The referenced schema overlaid with the referring node's keys; validation rules add up."""
    merged = {**base, **own}
    rules = [*base.get(VALIDATIONS_KEY, []), *own.get(VALIDATIONS_KEY, [])]
    if rules:
        merged[VALIDATIONS_KEY] = rules
    return merged


def _without(node: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in node.items() if name != key}
