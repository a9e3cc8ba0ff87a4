"""Hypothesis strategies that draw documents from a CRD's structural schema.

With `loose=True`, scalars and lists are also drawn a step past their bounds (one below a minimum,
one character past a short maxLength, a value outside an enum, one item short), so the models and
the CRD are compared on both sides of every edge, not only inside it.
"""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

UNBOUNDED_INTEGER = 10**6
LONGEST_DRAWN_STRING = 40
LONGEST_DRAWN_LIST = 3

_scalar = st.one_of(st.integers(-5, 5), st.text(string.ascii_letters, max_size=5), st.booleans())
_free_form = st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=5), _scalar, max_size=2)
_timestamps = st.builds(
    lambda moment, offset_minutes: moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    st.integers(-12 * 60, 14 * 60),
)


def documents(schema: dict[str, Any], *, loose: bool = False) -> st.SearchStrategy[Any]:
    """Values shaped by `schema`; with `loose`, some of them just outside its bounds."""
    slack = 1 if loose else 0
    if "enum" in schema:
        return st.sampled_from([*schema["enum"], "NotInTheEnum"] if loose else schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return _objects(schema, loose)
    if kind == "array":
        return _arrays(schema, loose)
    if kind == "string":
        return _strings(schema, loose)
    if kind == "integer":
        low = schema.get("minimum", -UNBOUNDED_INTEGER)
        high = schema.get("maximum", UNBOUNDED_INTEGER)
        return st.integers(low - slack, high + slack)
    if kind == "number":
        low = schema.get("minimum", -UNBOUNDED_INTEGER)
        high = schema.get("maximum", UNBOUNDED_INTEGER)
        exclusive = bool(schema.get("exclusiveMinimum")) and not loose
        return st.one_of(
            st.floats(
                low - slack, high + slack, exclude_min=exclusive, allow_nan=False, allow_infinity=False
            ),
            st.integers(low - slack + exclusive, high + slack),
        )
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"no strategy for schema node {schema}")


def _objects(schema: dict[str, Any], loose: bool) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        if "additionalProperties" in schema:
            return st.dictionaries(
                st.text(string.ascii_lowercase, min_size=1, max_size=5),
                documents(schema["additionalProperties"], loose=loose),
                max_size=2,
            )
        return _free_form
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {name: documents(child, loose=loose) for name, child in properties.items() if name in required},
        optional={
            name: documents(child, loose=loose) for name, child in properties.items() if name not in required
        },
    )


def _arrays(schema: dict[str, Any], loose: bool) -> st.SearchStrategy[list[Any]]:
    items = documents(schema["items"], loose=loose)
    low = max(schema.get("minItems", 0) - (1 if loose else 0), 0)
    high = min(schema.get("maxItems", LONGEST_DRAWN_LIST), max(low, LONGEST_DRAWN_LIST))
    list_type = None if loose else schema.get("x-kubernetes-list-type")
    if list_type == "set":
        return st.lists(items, min_size=low, max_size=high, unique=True)
    if list_type == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        return st.lists(
            items,
            min_size=low,
            max_size=high,
            unique_by=lambda item: tuple(str(item.get(key)) for key in keys),
        )
    return st.lists(items, min_size=low, max_size=high)


def _strings(schema: dict[str, Any], loose: bool) -> st.SearchStrategy[str]:
    if schema.get("format") == "date-time":
        return _timestamps.map(lambda moment: moment.isoformat())
    slack = 1 if loose else 0
    low = max(schema.get("minLength", 0) - slack, 0)
    high = min(schema.get("maxLength", LONGEST_DRAWN_STRING) + slack, LONGEST_DRAWN_STRING)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda text: len(text) <= high)
    return st.text(st.characters(codec="utf-8"), min_size=low, max_size=high)
