"""Real `workerfleet worker` processes against real Redis and RabbitMQ servers: outcomes, crashes, drain.

Each test runs against all three backends (Redis list, Redis stream, RabbitMQ).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from devenv.queues import (
    QueueUnderTest,
    RabbitMQQueue,
    RedisListQueue,
    RedisStreamQueue,
    describe,
    jobs_in,
)
from devenv.servers import RabbitMQServer, RedisServer
from devenv.waiting import eventually
from e2e.worker.conftest import WORKERFLEET, Workers
from workerfleet.planners.children import DRAIN_MARGIN_SECONDS
from workerfleet.worker import enqueue
from workerfleet.worker.runtime import RECEIVE_WAIT_SECONDS

DRAIN_SECONDS = 2

Job = tuple[str, dict[str, Any]]


def produce(queue: QueueUnderTest, jobs: list[Job], *, enqueued_at: datetime | None = None) -> None:
    """Enqueue probe jobs in order; the payload's id (the idempotency key) is also the job's id."""

    async def send() -> None:
        backend = queue.producer()
        await backend.connect()
        try:
            for job_id, payload in jobs:
                await enqueue(
                    backend, "probe", {"id": job_id, **payload}, job_id=job_id, enqueued_at=enqueued_at
                )
        finally:
            await backend.close()

    asyncio.run(send())


def events(probe_log: Path, event: str) -> list[tuple[str, int]]:
    """(job id, pid) of every `event` ("start" or "finish") the probe handlers recorded, in order."""
    return [
        (entry["id"], entry["pid"]) for entry in jobs_in(probe_log.read_text()) if entry["event"] == event
    ]


def test_every_outcome_follows_the_policy_and_the_metrics_match(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    worker = workers.start(queue)
    produce(
        queue,
        [
            ("ok-1", {}),
            ("ok-2", {}),
            ("dup", {}),
            ("dup", {}),  # the same idempotency key again: must not run twice
            ("permanent", {"fail": "permanent"}),
            ("transient", {"fail": "transient"}),
            ("review", {"fail": "review"}),
        ],
    )
    produce(queue, [("invalid", {"sleep": "not a number"})])
    produce(queue, [("late", {})], enqueued_at=datetime.now(UTC) - timedelta(hours=1))

    final_outcomes = ("succeeded", "duplicate", "dead_lettered", "review", "expired")
    totals = eventually(
        lambda: (
            (found := worker.jobs_total()) and sum(found.get(o, 0) for o in final_outcomes) >= 9 and found
        ),
        what="all nine jobs to reach a final outcome",
        timeout=60,
    )
    assert totals == {
        "succeeded": 3,
        "duplicate": 1,
        "retried": 2,
        "dead_lettered": 3,
        "review": 1,
        "expired": 1,
    }
    started = Counter(job_id for job_id, _pid in events(probe_log, "start"))
    assert started == {"ok-1": 1, "ok-2": 1, "dup": 1, "permanent": 1, "transient": 3, "review": 1}
    assert sorted(job_id for job_id, _pid in events(probe_log, "finish")) == ["dup", "ok-1", "ok-2"]

    dead_letters = queue.entries(f"{queue.name}.dlq")
    assert sorted(describe(dead_letters)) == [
        ("invalid", "ValidationFailed"),
        ("late", "DeadlineExceeded"),
        ("permanent", "PermanentError"),
        ("transient", "AttemptsExhausted"),
    ]
    by_id = {envelope.id: envelope for envelope in dead_letters}
    assert by_id["transient"].attempt == 3
    assert by_id["invalid"].last_failure is not None
    assert "$.sleep" in by_id["invalid"].last_failure.message
    assert describe(queue.entries(f"{queue.name}.review")) == [("review", "NeedsReview")]
    assert queue.entries(queue.name) == []
    assert queue.held() == 0


def test_a_job_held_by_a_killed_worker_runs_on_another(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    doomed = workers.start(queue)
    produce(queue, [("slow", {"sleep": 2})])
    eventually(
        lambda: ("slow", doomed.pid) in events(probe_log, "start"), what="the first worker to start the job"
    )
    doomed.signal(signal.SIGKILL)
    assert doomed.wait_exit() == -signal.SIGKILL

    survivor = workers.start(queue)
    eventually(
        lambda: ("slow", survivor.pid) in events(probe_log, "finish"),
        what="the second worker to finish the killed worker's job",
        timeout=60,
    )
    assert events(probe_log, "finish") == [("slow", survivor.pid)]
    assert survivor.jobs_total() == {"succeeded": 1}
    assert queue.entries(f"{queue.name}.dlq") == []


def test_sigterm_lets_the_job_in_flight_finish_and_takes_no_more(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    worker = workers.start(queue, drain_seconds=10)
    produce(queue, [("in-flight", {"sleep": 1.5}), ("next", {})])
    eventually(lambda: events(probe_log, "start"), what="the worker to start the first job")
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit() == 0
    assert events(probe_log, "finish") == [("in-flight", worker.pid)]
    assert [job_id for job_id, _pid in events(probe_log, "start")] == ["in-flight"]
    assert describe(queue.entries(queue.name)) == [("next", None)]
    assert queue.held() == 0


def test_sigterm_gives_back_a_job_that_cannot_finish_within_the_drain_time(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    worker = workers.start(queue, drain_seconds=0.5)
    produce(queue, [("long", {"sleep": 3})])
    eventually(lambda: events(probe_log, "start"), what="the worker to start the job")
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit() == 0
    assert any(entry["message"] == "drain time is up; giving back unfinished jobs" for entry in worker.logs())
    assert events(probe_log, "finish") == []
    [given_back] = queue.entries(queue.name)
    assert (given_back.id, given_back.attempt, given_back.last_failure) == ("long", 1, None)
    assert queue.held() == 0


class Freezable(Protocol):
    def freeze(self) -> None: ...

    def thaw(self) -> None: ...


@pytest.fixture(params=["redis-list", "redis-stream", "rabbitmq"])
def silent_queue(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[QueueUnderTest, Freezable]]:
    """A queue on a server of the test's own, which the test may freeze."""
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    server: RedisServer | RabbitMQServer
    queue: QueueUnderTest
    if request.param == "rabbitmq":
        server = RabbitMQServer(tmp_path / "rabbitmq")
        queue = RabbitMQQueue(server.address, name, server)
    else:
        server = RedisServer(tmp_path / "redis")
        queue = (RedisListQueue if request.param == "redis-list" else RedisStreamQueue)(server.address, name)
    server.start()
    try:
        yield queue, server
    finally:
        server.thaw()
        server.stop()


@pytest.mark.parametrize("job", ["idle", "job-in-flight"])
def test_sigterm_stops_the_worker_in_its_grace_period_while_the_queue_server_does_not_answer(
    silent_queue: tuple[QueueUnderTest, Freezable], job: str, workers: Workers, probe_log: Path
) -> None:
    # Given a worker, idle or running a job, whose queue server stops answering (connections stay open)
    queue, server = silent_queue
    worker = workers.start(queue, drain_seconds=DRAIN_SECONDS)
    if job == "job-in-flight":
        produce(queue, [("in-flight", {"sleep": DRAIN_SECONDS})])
        eventually(lambda: events(probe_log, "start"), what="the worker to start the job")
    server.freeze()
    try:
        time.sleep(RECEIVE_WAIT_SECONDS * 2)  # the worker is now waiting on the silent server
        # When Kubernetes stops the pod
        stopped_at = time.monotonic()
        worker.signal(signal.SIGTERM)
        # Then the worker exits before the pod's grace period (drain time + margin) ends in a SIGKILL,
        # rather than waiting out its queue client's timeouts
        assert worker.wait_exit(timeout=DRAIN_SECONDS + DRAIN_MARGIN_SECONDS) == 0
        print(f"worker exited {time.monotonic() - stopped_at:.1f}s after SIGTERM (drain {DRAIN_SECONDS}s)")
    finally:
        server.thaw()
    if job == "job-in-flight":
        # And the job is not lost: settled (its acknowledgement written before the stop), or still on
        # its queue, held or back for another worker
        def accounted_for() -> bool:
            on_queue = len(queue.entries(queue.name)) + queue.held()
            return on_queue == 1 or (on_queue == 0 and bool(events(probe_log, "finish")))

        eventually(accounted_for, what="the job settled or kept on its queue", timeout=30)


def test_the_worker_reconnects_with_backoff_when_redis_comes_back(
    tmp_path: Path, workers: Workers, probe_log: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        queue = RedisListQueue(server.address, f"jobs-{uuid.uuid4().hex[:8]}")
        worker = workers.start(queue)
        server.stop()
        time.sleep(4)
        reconnects = [
            entry for entry in worker.logs() if entry["message"] == "queue unreachable; reconnecting"
        ]
        assert 2 <= len(reconnects) <= 10, (
            "expected a few reconnect attempts with growing delays, not a busy loop"
        )
        delays = [entry["retry_in_seconds"] for entry in reconnects]
        assert max(delays) > min(delays)
        server.start()
        produce(queue, [("after-outage", {})])
        eventually(
            lambda: ("after-outage", worker.pid) in events(probe_log, "finish"),
            what="the worker to process a job after Redis came back",
            timeout=60,
        )
        assert worker.process.poll() is None
    finally:
        server.stop()


def test_a_worker_without_its_settings_exits_2_and_says_why(tmp_path: Path) -> None:
    finished = subprocess.run(
        [str(WORKERFLEET), "worker"],
        env={"PATH": os.environ.get("PATH", ""), "WORKERFLEET_QUEUE_PASSWORD": "hunter2"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    [entry] = [json.loads(line) for line in finished.stderr.splitlines() if line.startswith("{")]
    assert entry["message"] == "cannot start the worker"
    assert "WORKERFLEET_POOL" in entry["error"]
    assert "hunter2" not in finished.stderr
