"""A worker's start-up pays only for the API models it parses: its queue and its job types."""

from __future__ import annotations

import json
import subprocess
import sys

WORKER_START = """
import json
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import PodTemplate, WorkerPool
from workerfleet.worker import cli
from workerfleet.worker.settings import parse_policies, settings_from_env

queue = '{"redis": {"address": "127.0.0.1:6379", "list": "jobs"}}'
settings_from_env({"WORKERFLEET_POOL": "p", "WORKERFLEET_QUEUE": queue})
parse_policies('{"jobTypes": {"noop": {"lane": "fast", "timeoutSeconds": 30}}}')
print(json.dumps({
    "JobTypeSpec": JobTypeSpec.__pydantic_complete__,
    "WorkerPool": WorkerPool.__pydantic_complete__,
    "PodTemplate": PodTemplate.__pydantic_complete__,
}))
"""


def test_a_worker_parsing_its_settings_builds_no_validator_for_the_operators_models() -> None:
    built = json.loads(
        subprocess.run(
            [sys.executable, "-c", WORKER_START], check=True, capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert built == {"JobTypeSpec": True, "WorkerPool": False, "PodTemplate": False}, (
        "a worker built validators it never uses at start-up"
    )
