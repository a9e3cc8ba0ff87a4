"""The examples are valid, cover every lane and queue backend, hang together, and hold no secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api.crd_checks import offline_errors, openapi_schema
from workerfleet.api.base import ApiModel
from workerfleet.api.crdgen import JOB_TYPE, WORKER_POOL
from workerfleet.api.jobtype import JobType, Lane
from workerfleet.api.workerpool import Queue, WorkerPool

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
MODELS: dict[str, type[ApiModel]] = {"JobType": JobType, "WorkerPool": WorkerPool}
SCHEMAS = {"JobType": openapi_schema(JOB_TYPE), "WorkerPool": openapi_schema(WORKER_POOL)}
SECRET_WORDS = ("password", "token", "secret", "credential", "apikey", "api_key")


def _documents() -> list[dict[str, Any]]:
    return [document for path in EXAMPLES for document in yaml.safe_load_all(path.read_text())]


def _job_types() -> list[JobType]:
    return [JobType.model_validate(doc) for doc in _documents() if doc["kind"] == "JobType"]


def _pools() -> list[WorkerPool]:
    return [WorkerPool.model_validate(doc) for doc in _documents() if doc["kind"] == "WorkerPool"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_is_accepted_by_the_models_and_the_crd(path: Path) -> None:
    [document] = yaml.safe_load_all(path.read_text())
    MODELS[document["kind"]].model_validate(document)
    assert offline_errors(SCHEMAS[document["kind"]], document) == []
    assert "namespace" not in document["metadata"], "examples apply into whatever namespace the user picks"


def test_one_job_type_per_lane() -> None:
    assert sorted(job_type.spec.lane for job_type in _job_types()) == sorted(Lane)


def test_one_pool_per_queue_backend_and_one_canary() -> None:
    backends = sorted(
        name for pool in _pools() for name in Queue.model_fields if getattr(pool.spec.queue, name) is not None
    )
    assert set(backends) == set(Queue.model_fields)
    assert [pool.metadata.name for pool in _pools() if pool.spec.rollout is not None] == ["thumbs-eu"]


def test_pools_serve_job_types_the_examples_define() -> None:
    defined = {job_type.metadata.name for job_type in _job_types()}
    assert {name for pool in _pools() for name in pool.spec.job_types} <= defined


def _inline_secrets(node: Any, path: str = "") -> list[str]:
    """Places where a secret-looking name carries a literal value rather than a reference."""
    found: list[str] = []
    if isinstance(node, dict):
        name = str(node.get("name", "")).lower()
        if "value" in node and any(word in name for word in SECRET_WORDS):
            found.append(f"{path}.{node['name']}")
        for key, value in node.items():
            if isinstance(value, str) and any(word in key.lower() for word in SECRET_WORDS):
                found.append(f"{path}.{key}")
            found += _inline_secrets(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += _inline_secrets(item, f"{path}[{index}]")
    return found


def test_examples_reference_secrets_and_never_inline_them() -> None:
    documents = _documents()
    assert all(document["kind"] != "Secret" for document in documents)
    assert [found for document in documents for found in _inline_secrets(document)] == []
    assert _inline_secrets({"env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}) == [".env[0].DB_PASSWORD"]
    assert _inline_secrets({"auth": {"password": "hunter2"}}) == [".auth.password"]
