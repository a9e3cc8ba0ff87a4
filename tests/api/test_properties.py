"""Properties over many drawn documents: the models and the CRD accept the same ones, and whatever
the models accept survives a trip through YAML unchanged."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.api.crd_checks import offline_errors
from tests.api.strategies import documents
from workerfleet.api.base import ApiModel
from workerfleet.api.jobtype import JobTypeSpec, JobTypeStatus
from workerfleet.api.schema import structural_schema
from workerfleet.api.workerpool import WorkerPoolSpec, WorkerPoolStatus

PARTS: list[type[ApiModel]] = [WorkerPoolSpec, WorkerPoolStatus, JobTypeSpec, JobTypeStatus]
# Built once: constructing schemas and strategies per example would cost more than the checks.
SCHEMAS = {model: structural_schema(model) for model in PARTS}
LOOSE_DOCUMENTS = {model: documents(SCHEMAS[model], loose=True) for model in PARTS}
DOCUMENTS = {model: documents(SCHEMAS[model]) for model in PARTS}
MAX_DROPPED_FIELDS = 30
ROUND_TRIPS = 50
"""Each one a whole accepted pool checked against the CRD schema: slow enough to draw fewer."""
DRAWS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def _accepted_by_model(model: type[ApiModel], document: Any) -> ApiModel | None:
    try:
        return model.model_validate(document)
    except ValidationError:
        return None


def _accepted_after_dropping_refused_fields(model: type[ApiModel], document: Any) -> ApiModel | None:
    """The model of `document` with each field a rule refuses taken out, one at a time. A random pod
    template nearly always holds a field the restricted rules refuse (privileged, hostPort, ...): drawn
    as they come, about 1 pool in 100 is accepted, too few to test the round trip on."""
    for _ in range(MAX_DROPPED_FIELDS):
        try:
            return model.model_validate(document)
        except ValidationError as error:
            if not _drop(document, error.errors()[0]["loc"]):
                return None
    return None


def _drop(document: Any, location: tuple[int | str, ...]) -> bool:
    """Remove the value at `location` when it is optional to remove (not the document itself)."""
    if not location:
        return False
    *path, last = location
    parent = document
    for step in path:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        del parent[last]
        return True
    return False


@pytest.mark.parametrize("model", PARTS, ids=lambda model: model.__name__)
@DRAWS
@given(data=st.data())
def test_models_and_crd_accept_the_same_documents(model: type[ApiModel], data: st.DataObject) -> None:
    schema = SCHEMAS[model]
    document = data.draw(LOOSE_DOCUMENTS[model], label="document")
    errors = offline_errors(schema, document)
    parsed = _accepted_by_model(model, document)
    assert (parsed is not None) == (errors == []), f"model accepted: {parsed is not None}; CRD said: {errors}"


@pytest.mark.parametrize("model", PARTS, ids=lambda model: model.__name__)
@settings(DRAWS, max_examples=ROUND_TRIPS)
@given(data=st.data())
def test_accepted_objects_round_trip_through_yaml(model: type[ApiModel], data: st.DataObject) -> None:
    schema = SCHEMAS[model]
    parsed = _accepted_after_dropping_refused_fields(model, data.draw(DOCUMENTS[model], label="document"))
    assume(parsed is not None)
    assert parsed is not None
    serialised = parsed.to_dict()
    text = yaml.safe_dump(serialised, sort_keys=True)
    assert model.model_validate(yaml.safe_load(text)) == parsed
    assert offline_errors(schema, serialised) == []
