"""A pool stored before the pod template rules existed is read without what they refuse, and the
operator says so; a pool the rules admit is read as stored, silently."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from workerfleet.api.workerpool import WorkerPoolSpec
from workerfleet.handlers.workerpool import stored_spec

WORKER = {"name": "worker", "image": "thumbs:1"}


def pool(**pod_spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "media", "name": "thumbs"},
        "spec": {
            "jobTypes": ["resize-image"],
            "template": {"spec": {"containers": [WORKER], **pod_spec}},
            "queue": {"redis": {"address": "redis:6379", "list": "jobs"}},
        },
    }


def test_an_admissible_pool_is_read_as_stored(caplog: pytest.LogCaptureFixture) -> None:
    stored = pool(hostNetwork=False)
    with caplog.at_level(logging.WARNING):
        assert stored_spec(stored) == stored["spec"]
    assert caplog.records == []


def test_a_pool_stored_before_the_rules_is_read_restricted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored = pool(hostNetwork=True, serviceAccountName="admin")
    with caplog.at_level(logging.WARNING):
        spec = WorkerPoolSpec.model_validate(stored_spec(stored))
    assert spec.template.spec.host_network is None
    assert spec.template.spec.service_account_name is None
    assert stored["spec"]["template"]["spec"]["hostNetwork"] is True
    [record] = caplog.records
    assert "media/thumbs" in record.getMessage()
