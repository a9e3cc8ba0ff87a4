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
@DRAWS
@given(data=st.data())
def test_accepted_objects_round_trip_through_yaml(model: type[ApiModel], data: st.DataObject) -> None:
    schema = SCHEMAS[model]
    parsed = _accepted_by_model(model, data.draw(DOCUMENTS[model], label="document"))
    assume(parsed is not None)
    assert parsed is not None
    serialised = parsed.to_dict()
    text = yaml.safe_dump(serialised, sort_keys=True)
    assert model.model_validate(yaml.safe_load(text)) == parsed
    assert offline_errors(schema, serialised) == []
