"""`workerfleet enqueue` against real Redis (list, stream) and RabbitMQ servers: what it enqueues is what
a real worker runs; what the worker would refuse is refused up front, naming the field, and nothing is
enqueued."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from devenv.queues import QueueUnderTest, describe
from devenv.waiting import eventually
from e2e.worker.conftest import POOL, WORKERFLEET, Workers, probe_policies
from e2e.worker.test_worker_processes import events
from workerfleet.worker.envelope import decode


def manifests(directory: Path, queue: QueueUnderTest) -> list[str]:
    """The pool and its JobType as manifests on disk: the producer reads them like the cluster's."""
    pool = {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": POOL},
        "spec": {
            "jobTypes": ["probe"],
            "template": {"spec": {"containers": [{"name": "worker", "image": "probe:1"}]}},
            "queue": queue.spec(),
        },
    }
    job_type = {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "probe"},
        "spec": probe_policies(queue.name)["jobTypes"]["probe"],
    }
    (directory / "pool.yaml").write_text(yaml.safe_dump(pool))
    (directory / "probe.yaml").write_text(yaml.safe_dump(job_type))
    return ["--pool-file", str(directory / "pool.yaml"), "--job-type-file", str(directory / "probe.yaml")]


def enqueue(files: list[str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WORKERFLEET), "enqueue", "--pool", POOL, "--type", "probe", *files, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_enqueued_jobs_are_what_the_worker_runs_and_bad_ones_never_reach_the_queue(
    queue: QueueUnderTest, workers: Workers, probe_log: Path, tmp_path: Path
) -> None:
    files = manifests(tmp_path, queue)

    # When data breaks the JobType's input schema
    refused = enqueue(files, "--data", '{"id": "bad", "sleep": "long"}')
    # Then the command fails naming the field (and the queue gets nothing: see below)
    assert refused.returncode == 2, refused
    assert "at $.sleep: 'long' is not of type 'number'" in refused.stderr
    assert "nothing enqueued" in refused.stderr

    # When a good job is enqueued with a key (the JobType's idempotency keyField is `id`)
    done = enqueue(files, "--data", '{"sleep": 0}', "--key", "good-1", "--id", "good-1")
    # Then it prints the envelope it enqueued, and the queue holds exactly that (not the bad one)
    assert done.returncode == 0, done.stderr
    printed = decode(done.stdout.strip().encode())
    assert (printed.id, printed.type, printed.payload) == ("good-1", "probe", {"sleep": 0, "id": "good-1"})
    assert "enqueued job good-1 of type probe on" in done.stderr
    assert queue.entries(queue.name) == [printed]

    # And a job whose own deadline passes before any worker runs
    late = enqueue(files, "--data", '{"id": "late-1"}', "--id", "late-1", "--deadline", "1s")
    assert late.returncode == 0, late.stderr
    assert json.loads(late.stdout)["deadlineSeconds"] == 1
    time.sleep(1.5)

    # When a worker starts: the good job runs, the late one expires without running
    workers.start(queue)
    eventually(
        lambda: "good-1" in {job_id for job_id, _ in events(probe_log, "finish")},
        what="the enqueued job to run",
        timeout=30,
    )
    dead = eventually(lambda: queue.entries(f"{queue.name}.dlq"), what="the late job to expire", timeout=30)
    assert describe(dead) == [("late-1", "DeadlineExceeded")]
    assert [job_id for job_id, _ in events(probe_log, "start")] == ["good-1"]


DELAY_SECONDS = 3.0


def test_a_delayed_job_runs_at_its_time_not_before(
    queue: QueueUnderTest, workers: Workers, probe_log: Path, tmp_path: Path
) -> None:
    # Given a running worker
    files = manifests(tmp_path, queue)
    workers.start(queue)

    # When one job is enqueued with --delay and another without
    asked = time.monotonic()
    later = enqueue(
        files, "--data", '{"id": "later-1"}', "--id", "later-1", "--delay", f"{DELAY_SECONDS:.0f}s"
    )
    now = enqueue(files, "--data", '{"id": "now-1"}', "--id", "now-1")
    assert later.returncode == 0, later.stderr
    assert now.returncode == 0, now.stderr
    assert "due at" in later.stderr

    # Then the other runs at once, and the delayed one only when its time has come, soon after
    def started(job_id: str) -> float | None:
        begun = any(started_id == job_id for started_id, _ in events(probe_log, "start"))
        return time.monotonic() - asked if begun else None

    eventually(lambda: started("now-1"), what="the job without a delay to start", timeout=10, interval=0.05)
    assert started("later-1") is None
    waited = eventually(
        lambda: started("later-1"), what="the delayed job to start", timeout=15, interval=0.05
    )
    assert DELAY_SECONDS <= waited < DELAY_SECONDS + 4, waited
