"""Hostile messages (issue 22) among good jobs, against a real worker process on each backend: every good
job finishes, every hostile message is dead-lettered with its reason on its first delivery, the worker
neither exits nor stalls nor stops being ready, and nothing stays held.

One worker per backend takes all seven kinds mixed with good jobs (each kind alone is covered against
the decoder in tests/worker/test_envelope.py). On the stream, the nested ones are also left pending
under a consumer that vanished, so the worker meets them again when it reclaims them.
"""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from devenv.hostile import HostileKind, HostileMessage, every_kind
from devenv.queues import QueueUnderTest, RedisStreamQueue
from devenv.waiting import eventually
from e2e.worker.conftest import WorkerProcess, Workers
from e2e.worker.test_delivery import enqueue_raw, probe_body
from e2e.worker.test_worker_processes import events
from workerfleet.worker.envelope import Envelope
from workerfleet.worker.metrics import UNSERVED_JOB_TYPE

GOOD_JOBS = 40
CONCURRENCY = 2
"""No more than the nested kinds: on RabbitMQ, each one left unacknowledged takes a prefetch slot."""
NESTED = (HostileKind.DEEP_ARRAY, HostileKind.DEEP_PAYLOAD)


def job_type_labels(worker: WorkerProcess) -> set[str]:
    """Every job_type label value of the worker's job metrics (counters, histogram, in-flight gauge)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["job_type"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "job_type" in sample.labels
    }


def leave_pending_under_a_vanished_consumer(queue: RedisStreamQueue, messages: list[HostileMessage]) -> None:
    """Add the messages and have a consumer that never comes back read them: pending, idle, unsettled."""
    host, port = queue.address.split(":")
    with redis.Redis(host=host, port=int(port)) as client:
        client.xgroup_create(queue.name, "workers", id="0", mkstream=True)
        for message in messages:
            client.xadd(queue.name, {"job": message.body})
        client.xreadgroup("workers", "vanished-worker", {queue.name: ">"}, count=len(messages))


def test_hostile_messages_are_dead_lettered_with_their_reason_and_nothing_stays_held(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    prefix = f"hostile-{uuid.uuid4().hex[:6]}"
    hostile = every_kind(prefix)
    if isinstance(queue, RedisStreamQueue):
        orphans = [HostileMessage(kind, f"{prefix}-orphan-{kind.value}") for kind in NESTED]
        leave_pending_under_a_vanished_consumer(queue, orphans)
        hostile += orphans
    worker = workers.start(queue, concurrency=CONCURRENCY)
    good = [f"{prefix}-good-{index}" for index in range(GOOD_JOBS)]
    bodies: list[bytes] = []
    for index, job_id in enumerate(good):
        bodies.append(probe_body(job_id))
        if index % 5 == 0 and index // 5 < len(HostileKind):
            bodies.append(hostile[index // 5].body)
    enqueue_raw(queue, bodies)

    progress: dict[str, int] = {}

    def settled() -> list[Envelope] | None:
        if worker.process.poll() is not None:
            raise AssertionError(f"the worker exited: {worker.log_path.read_text()[-3000:]}")
        dead = queue.entries(f"{queue.name}.dlq")
        finished = {job_id for job_id, _pid in events(probe_log, "finish")}
        progress.update(dead_letters=len(dead), good_jobs_finished=len(finished), held=queue.held())
        done = len(dead) >= len(hostile) and finished >= set(good) and progress["held"] == 0
        return dead if done else None

    try:
        dead = eventually(
            settled,
            what=f"{len(hostile)} hostile messages dead-lettered, {GOOD_JOBS} good jobs done, nothing held",
            timeout=60,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}; at the end: {progress}") from None
    # Each hostile message dead-lettered once, on its first attempt, with the reason naming what it broke
    found = {
        message.kind.value + ("/orphan" if "orphan" in message.tag else ""): [
            (letter.last_failure.reason if letter.last_failure else None, letter.attempt)
            for letter in dead
            if message.matches(letter)
        ]
        for message in hostile
    }
    expected = {
        message.kind.value + ("/orphan" if "orphan" in message.tag else ""): [(message.expected_reason, 1)]
        for message in hostile
    }
    assert found == expected
    assert len(dead) == len(hostile)
    # The huge one's dead letter keeps its first bytes only, and says how big it was
    [huge_message] = [message for message in hostile if message.kind is HostileKind.HUGE]
    [huge] = [letter for letter in dead if huge_message.matches(letter)]
    assert huge.payload["truncatedFromBytes"] == len(huge_message.body)
    # Every good job ran once; the worker never exited and is still ready; nothing stays held
    assert sorted(job_id for job_id, _pid in events(probe_log, "finish")) == sorted(good)
    assert worker.process.poll() is None, worker.log_path.read_text()[-3000:]
    assert worker.probe("/readyz")[0] == 200
    assert worker.probe("/healthz")[0] == 200
    assert queue.held() == 0
    assert queue.entries(queue.name) == []
    assert worker.jobs_total() == {"succeeded": GOOD_JOBS, "dead_lettered": len(hostile)}
    # The 250-character type (and the malformed ones) became one fixed label value, not a series each
    assert job_type_labels(worker) <= {"probe", UNSERVED_JOB_TYPE}
