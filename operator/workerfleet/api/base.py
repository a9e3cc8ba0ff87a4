"""What every API model shares: Kubernetes naming, strict parsing, and rules stated once for two checkers.

A cross-field rule is written once as a `Rule`: its CEL text goes into the CRD (the API server
enforces it), and its Python predicate runs when a model is built (the operator enforces it on
whatever it reads). Keeping both halves side by side is what keeps them in step.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Generic, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

GROUP = "workerfleet.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "workerfleet.dev/v1alpha1"
"""GROUP/VERSION, spelled out so that resource models can use it as a Literal default."""

VALIDATIONS_KEY = "x-kubernetes-validations"

MAX_COUNT = 2**53 - 1
"""The largest integer every JSON reader holds exactly (the API server takes no larger bound)."""
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
"""A count or generation in status."""

Checked = TypeVar("Checked")
Item = TypeVar("Item")


class FieldErrorReason(StrEnum):
    """How the API server words a broken rule: `Invalid value` unless a rule says otherwise."""

    INVALID = "FieldValueInvalid"
    FORBIDDEN = "FieldValueForbidden"
    REQUIRED = "FieldValueRequired"
    DUPLICATE = "FieldValueDuplicate"


@dataclass(frozen=True)
class Rule(Generic[Checked]):
    """One validation rule with its two enforcers: CEL for the API server, a predicate for Python.

    Used either in a model's `validations` (the predicate gets the model) or inside `Annotated[...]`
    on a field's type (the predicate gets the value).
    """

    cel: str
    message: str
    holds: Callable[[Checked], bool]
    field_path: str | None = None
    reason: FieldErrorReason | None = None

    def as_validation(self) -> dict[str, str]:
        """The rule as one entry of `x-kubernetes-validations`."""
        validation = {"rule": self.cel, "message": self.message}
        if self.field_path is not None:
            validation["fieldPath"] = self.field_path
        if self.reason is not None:
            validation["reason"] = self.reason.value
        return validation

    def check(self, value: Checked) -> Checked:
        if not self.holds(value):
            raise ValueError(self.message)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault(VALIDATIONS_KEY, []).append(self.as_validation())
        return json_schema


def _add_model_validations(schema: dict[str, Any], model: type[Any]) -> None:
    rules: tuple[Rule[Any], ...] = getattr(model, "validations", ())
    if rules:
        schema[VALIDATIONS_KEY] = [rule.as_validation() for rule in rules]


@functools.cache
def _module_tree(module_name: str) -> ast.Module:
    return ast.parse(inspect.getsource(sys.modules[module_name]))


def attribute_docstrings(model: type[Any]) -> dict[str, str]:
    """The string written under each annotated attribute in the class body, by attribute name.

    Read from the module's source when a schema is wanted, not at import: parsing the source of
    every model as its class is made was a third of a worker's start-up.
    """
    found = next(
        (
            node
            for node in ast.walk(_module_tree(model.__module__))
            if isinstance(node, ast.ClassDef) and node.name == model.__name__
        ),
        None,
    )
    docstrings: dict[str, str] = {}
    if found is None:
        return docstrings
    for statement, following in zip(found.body, found.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docstrings[statement.target.id] = inspect.cleandoc(following.value.value)
    return docstrings


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, no unknown fields, no silent type coercion.

    Strictness matches the API server: `"5"` is not an integer there, so it is not one here either.
    Attribute docstrings become the field descriptions that `kubectl explain` shows; they are read
    when a JSON schema is made, and validators are built on first use, so a process that only
    parses a few models (a worker) does not pay for all of them at import.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
        defer_build=True,
        json_schema_extra=_add_model_validations,
    )

    validations: ClassVar[tuple[Rule[Any], ...]] = ()

    @model_validator(mode="after")
    def _check_validations(self) -> Self:
        for rule in self.validations:
            rule.check(self)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler, /
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        properties = handler.resolve_ref_schema(json_schema).get("properties", {})
        documented = [model for model in reversed(cls.__mro__) if issubclass(model, ApiModel)]
        docstrings = {
            name: text for model in documented for name, text in attribute_docstrings(model).items()
        }
        for name, field in cls.model_fields.items():
            shown = properties.get(field.serialization_alias or field.alias or name)
            if shown is not None and name in docstrings and field.description is None:
                shown.setdefault("description", docstrings[name])
        return json_schema

    def to_dict(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _timestamp_text_only(value: object) -> object:
    # Lax datetime parsing would also take a number of seconds; the API server takes only text.
    if not isinstance(value, str | datetime):
        raise ValueError("a timestamp must be an RFC 3339 string, e.g. 2024-05-01T12:00:00Z")
    return value


Timestamp = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_timestamp_text_only)]
"""An RFC 3339 time with a zone, as Kubernetes writes `metav1.Time`."""


def first_repeated(values: list[Item]) -> Item | None:
    """The first value that stands earlier in the list too; None when every value is there once."""
    return next((value for index, value in enumerate(values) if value in values[:index]), None)


def _without_duplicates(values: list[Item]) -> list[Item]:
    repeated = first_repeated(values)
    if repeated is not None:
        raise ValueError(f"duplicate value: {repeated!s}")
    return values


ListSet = Annotated[
    list[Item],
    AfterValidator(_without_duplicates),
    Field(json_schema_extra={"x-kubernetes-list-type": "set"}),
]
"""A list of unique scalars (`x-kubernetes-list-type: set`): duplicates are refused, by the API server too."""
