"""A worker installs `workerfleet` alone (the base dependencies): the runtime and the producer work
there, and none of the operator's dependencies is installed. Wheels come from a cache outside the
repository, so after the first run this installs offline in seconds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.footprint import make_environment

OPERATOR_ONLY = ("kopf", "aiohttp", "urllib3", "cryptography", "kubernetes")


@pytest.fixture(scope="module")
def worker_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_environment(tmp_path_factory.mktemp("install") / "worker")


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_the_worker_set_runs_the_worker_and_the_producer(worker_python: Path) -> None:
    # Given an environment with `pip install workerfleet` and nothing else
    workerfleet = str(worker_python.parent / "workerfleet")

    # When the worker's entry point is asked for its options
    result = _run([workerfleet, "worker", "--help"])

    # Then it answers, and the producer and every worker backend import
    assert result.returncode == 0, result.stderr
    assert "--handlers" in result.stdout
    imported = _run(
        [
            str(worker_python),
            "-c",
            "from workerfleet import producer\n"
            "import workerfleet.worker.redis_list, workerfleet.worker.redis_stream\n"
            "import workerfleet.worker.rabbitmq, workerfleet.worker.demo\n"
            "print(producer.build.__name__)",
        ]
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "build"


def test_the_worker_set_holds_none_of_the_operators_dependencies(worker_python: Path) -> None:
    found = _run(
        [
            str(worker_python),
            "-c",
            "import importlib.util\n"
            f"print(' '.join(m for m in {OPERATOR_ONLY!r} if importlib.util.find_spec(m) is not None))",
        ]
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "", f"installed with the worker set: {found.stdout.strip()}"


def test_the_operator_and_the_cluster_path_name_the_extra_they_need(worker_python: Path) -> None:
    workerfleet = str(worker_python.parent / "workerfleet")

    operator = _run([workerfleet, "run", "--standalone"])
    assert operator.returncode == 2
    assert "pip install 'workerfleet[operator]'" in operator.stderr, operator.stderr
    assert "Traceback" not in operator.stderr

    enqueue = _run([workerfleet, "enqueue", "--pool", "p", "--type", "t", "--data", "{}"])
    assert enqueue.returncode != 0
    assert "pip install 'workerfleet[cluster]'" in enqueue.stderr, enqueue.stderr
    assert "nothing enqueued" in enqueue.stderr
