"""The bad-input corpus, checked without a cluster: the models and the offline CRD checks refuse every
case, so the operator can never accept what the API server refuses, and the corpus stays honest."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from e2e.test_api_bad_input import BASES, CASES, Case, merge_patch
from tests.api.crd_checks import offline_errors, openapi_schema
from workerfleet.api.base import ApiModel
from workerfleet.api.crdgen import JOB_TYPE, WORKER_POOL
from workerfleet.api.jobtype import JobType
from workerfleet.api.workerpool import WorkerPool

MODELS: dict[str, type[ApiModel]] = {"JobType": JobType, "WorkerPool": WorkerPool}
SCHEMAS = {"JobType": openapi_schema(JOB_TYPE), "WorkerPool": openapi_schema(WORKER_POOL)}


def test_corpus_is_large_and_every_case_is_named_once() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)
    assert {case.kind for case in CASES} == set(BASES)


def test_every_case_names_its_field_in_its_expected_error() -> None:
    for case in CASES:
        assert case.expected_error.startswith(case.field) or case.expected_error.endswith(f'"{case.field}"')


@pytest.mark.parametrize("kind", sorted(BASES))
def test_bases_are_accepted_offline(kind: str) -> None:
    MODELS[kind].model_validate(BASES[kind])
    assert offline_errors(SCHEMAS[kind], BASES[kind]) == []


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_models_and_offline_checks_refuse_each_case(case: Case) -> None:
    with pytest.raises(ValidationError):
        MODELS[case.kind].model_validate(case.manifest)
    assert offline_errors(SCHEMAS[case.kind], case.manifest) != []


@pytest.mark.parametrize(
    ("target", "patch", "merged"),
    [
        ({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}}, {"a": 1, "b": {"d": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": None}, {}),
        ({"a": 1}, {"b": {"c": None}}, {"a": 1, "b": {}}),
    ],
)
def test_merge_patch_follows_rfc_7396(target: object, patch: object, merged: object) -> None:
    assert merge_patch(target, patch) == merged
    assert merge_patch({"untouched": True}, {}) == {"untouched": True}
