"""Fixtures for the worker runtime's integration tests: real queue servers and real worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devenv.queues import (
    HEARTBEAT_SECONDS,
    QueueUnderTest,
    RabbitMQQueue,
    RedisListQueue,
    RedisStreamQueue,
)
from devenv.servers import RabbitMQServer, RedisServer, free_port
from devenv.waiting import eventually

REPOSITORY = Path(__file__).resolve().parents[2]
WORKERFLEET = Path(sys.executable).parent / "workerfleet"
POOL = "probes"
REVISION = "rev-test"
TIMEOUT_SECONDS = 4
EXIT_TIMEOUT_SECONDS = 30.0


@pytest.fixture(params=["redis-list", "redis-stream", "rabbitmq"])
def queue(request: pytest.FixtureRequest) -> QueueUnderTest:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    if request.param == "rabbitmq":
        rabbitmq: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
        return RabbitMQQueue(rabbitmq.address, name, rabbitmq)
    redis: RedisServer = request.getfixturevalue("redis_server")
    if request.param == "redis-list":
        return RedisListQueue(redis.address, name)
    return RedisStreamQueue(redis.address, name)


def probe_policies(queue_name: str, extra_job_types: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `probe` JobType's spec (and any extra ones), as the operator's ConfigMap would carry it."""
    return {
        "jobTypes": {
            **(extra_job_types or {}),
            "probe": {
                "lane": "fast",
                "timeoutSeconds": TIMEOUT_SECONDS,
                "deadlineSeconds": 600,
                "input": {
                    "schema": {
                        "type": "object",
                        "required": ["id"],
                        "properties": {
                            "id": {"type": "string"},
                            "sleep": {"type": "number"},
                            "block": {"type": "number"},
                            "fail": {"enum": ["transient", "permanent", "review", "crash"]},
                            "failUnless": {"type": "string"},
                        },
                    }
                },
                "retry": {
                    "maxAttempts": 3,
                    "backoff": {"initialSeconds": 0.2, "maxSeconds": 1, "multiplier": 2},
                },
                "deadLetter": {"queue": f"{queue_name}.dlq"},
                "review": {"queue": f"{queue_name}.review"},
                "idempotency": {"keyField": "id", "ttlSeconds": 3600},
            },
        }
    }


class NamedQueue(Protocol):
    """What a worker is pointed at: the queue's name and the WorkerPool .spec.queue (every
    QueueUnderTest is one)."""

    name: str

    def spec(self) -> dict[str, Any]: ...


class WorkerProcess:
    """One `workerfleet worker` process, its JSON log and its metrics endpoint."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, metrics_port: int) -> None:
        self.process = process
        self.log_path = log_path
        self.metrics_port = metrics_port

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_until_consuming(self) -> None:
        def connected() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}: {self.log_path.read_text()}"
                )
            return any(entry["message"] == "connected to the queue" for entry in self.logs())

        eventually(connected, what="the worker to connect to its queue", timeout=30)

    def signal(self, signal_number: signal.Signals) -> None:
        self.process.send_signal(signal_number)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT_SECONDS) -> int:
        """The exit code; a worker still running after `timeout` is made to dump its threads' stacks
        (SIGABRT with faulthandler on) and the failure shows them with its log."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            raise AssertionError(
                f"worker still running {timeout}s later; its log:\n{self.log_path.read_text()}"
            ) from None

    def probe(self, path: str) -> tuple[int, str]:
        """Status and body of GET `path` on the worker's metrics port."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def jobs_total(self) -> dict[str, float]:
        """workerfleet_jobs_total by outcome, for this pool and revision: the outcomes that happened
        (every outcome's series is there from the start, at 0, so that a rate over it is never empty)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "workerfleet_jobs_total":
                    assert (sample.labels["pool"], sample.labels["revision"]) == (POOL, REVISION)
                    outcome = sample.labels["outcome"]
                    totals[outcome] = totals.get(outcome, 0) + sample.value
        return {outcome: total for outcome, total in totals.items() if total}


class Workers:
    """Starts worker processes against a queue and makes sure none outlives the test."""

    def __init__(self, directory: Path, probe_log: Path) -> None:
        self._directory = directory
        self._probe_log = probe_log
        self._started: list[WorkerProcess] = []

    def start(
        self,
        queue: NamedQueue,
        *,
        drain_seconds: float | None = None,
        concurrency: int = 1,
        worker_id: str | None = None,
        extra_job_types: dict[str, Any] | None = None,
        environment: dict[str, str] | None = None,
        wait: bool = True,
    ) -> WorkerProcess:
        """A worker process; `worker_id` fixed for a restarted container, `extra_job_types` beside probe,
        `environment` added to the worker's."""
        index = len(self._started)
        policies = self._directory / f"policies-{index}.json"
        policies.write_text(json.dumps(probe_policies(queue.name, extra_job_types)))
        metrics_port = free_port()
        settings = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPOSITORY),
            "WORKERFLEET_POOL": POOL,
            "WORKERFLEET_REVISION": REVISION,
            "WORKERFLEET_QUEUE": json.dumps(queue.spec()),
            "WORKERFLEET_POLICIES": str(policies),
            "WORKERFLEET_WORKER_ID": worker_id or f"worker-{index}-{uuid.uuid4().hex[:6]}",
            "WORKERFLEET_CONCURRENCY": str(concurrency),
            "WORKERFLEET_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "WORKERFLEET_METRICS_ADDRESS": "127.0.0.1",
            "WORKERFLEET_METRICS_PORT": str(metrics_port),
            "WORKERFLEET_PROBE_LOG": str(self._probe_log),
            "PYTHONFAULTHANDLER": "1",
            **(environment or {}),
        }
        if drain_seconds is not None:
            settings["WORKERFLEET_DRAIN_SECONDS"] = str(drain_seconds)
        log_path = self._directory / f"worker-{index}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(WORKERFLEET), "worker", "--handlers", "e2e.worker.probe_handlers"],
                env=settings,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        worker = WorkerProcess(process, log_path, metrics_port)
        self._started.append(worker)
        if wait:
            worker.wait_until_consuming()
        return worker

    def stop_all(self) -> None:
        for worker in self._started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=EXIT_TIMEOUT_SECONDS)


@pytest.fixture
def probe_log(tmp_path: Path) -> Path:
    path = tmp_path / "probe.jsonl"
    path.touch()
    return path


@pytest.fixture
def workers(tmp_path: Path, probe_log: Path) -> Iterator[Workers]:
    started = Workers(tmp_path, probe_log)
    try:
        yield started
    finally:
        started.stop_all()
