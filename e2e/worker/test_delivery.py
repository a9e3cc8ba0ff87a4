"""Delivery guarantees of real `workerfleet worker` processes against real queue servers: nothing is lost,
nothing runs twice that need not, and a job that keeps killing its worker ends in the dead-letter queue.

Some tests run on one backend only, where the defect they pin down lives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import redis

from devenv.queues import QueueUnderTest, RabbitMQQueue, RedisListQueue, RedisStreamQueue, describe
from devenv.servers import RabbitMQServer, RedisServer
from devenv.waiting import eventually
from e2e.worker.conftest import Workers
from e2e.worker.test_worker_processes import events, produce
from workerfleet.worker.envelope import encode, new_envelope


def redis_client(address: str) -> redis.Redis:
    host, port = address.split(":")
    return redis.Redis(host=host, port=int(port))


def probe_body(job_id: str, payload: dict[str, Any] | None = None, job_type: str = "probe") -> bytes:
    envelope = new_envelope(job_type, {"id": job_id, **(payload or {})}, now=datetime.now(UTC), job_id=job_id)
    return encode(envelope)


def log_messages(worker_logs: list[dict[str, Any]]) -> list[str]:
    return [entry["message"] for entry in worker_logs]


def test_stream_entries_added_before_any_worker_started_are_all_delivered(
    redis_server: RedisServer, workers: Workers, probe_log: Path
) -> None:
    """A producer that only XADDs (no consumer group yet): the first worker must still run every job."""
    queue = RedisStreamQueue(redis_server.address, f"jobs-{uuid.uuid4().hex[:8]}")
    count = 300
    with redis_client(redis_server.address) as client, client.pipeline(transaction=False) as pipe:
        for index in range(count):
            pipe.xadd(queue.name, {"job": probe_body(f"early-{index}")})
        pipe.execute()
    worker = workers.start(queue, concurrency=8)
    eventually(
        lambda: worker.jobs_total().get("succeeded", 0) >= count,
        what=f"all {count} jobs enqueued before the first worker to be done",
        timeout=60,
    )
    assert len({job_id for job_id, _pid in events(probe_log, "finish")}) == count
    assert queue.held() == 0


def enqueue_raw(queue: QueueUnderTest, bodies: list[bytes]) -> None:
    """Put messages on the queue exactly as given, as a buggy or foreign producer might."""

    async def send() -> None:
        backend = queue.producer()
        await backend.connect()
        try:
            for body in bodies:
                await backend.enqueue(body)
        finally:
            await backend.close()

    asyncio.run(send())


def test_messages_a_worker_cannot_handle_are_dead_lettered_with_the_reason_never_deleted(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    worker = workers.start(queue)
    enqueue_raw(
        queue,
        [
            b"\xffnot json at all",
            json.dumps({"id": "half", "type": "probe"}).encode(),  # no enqueuedAt: not an envelope
            probe_body("stranger", job_type="someone-elses"),
        ],
    )
    produce(queue, [("ok", {})])
    eventually(
        lambda: len(queue.entries(f"{queue.name}.dlq")) >= 3 and worker.jobs_total().get("succeeded"),
        what="the three unhandleable messages in the dead-letter queue and the good job done",
        timeout=30,
    )
    dead = {envelope.id: envelope for envelope in queue.entries(f"{queue.name}.dlq")}
    [garbage_id] = set(dead) - {"half", "stranger"}  # not JSON: the dead letter gets an id of its own
    assert sorted(describe(list(dead.values()))) == sorted(
        [(garbage_id, "MalformedEnvelope"), ("half", "MalformedEnvelope"), ("stranger", "UnknownJobType")]
    )
    assert dead[garbage_id].payload == {"originalBase64": base64.b64encode(b"\xffnot json at all").decode()}
    assert json.loads(dead["half"].payload["original"]) == {"id": "half", "type": "probe"}
    assert "enqueuedAt" in dead["half"].last_failure.message  # type: ignore[union-attr]
    assert dead["stranger"].payload == {"id": "stranger"}
    assert worker.jobs_total() == {"succeeded": 1, "dead_lettered": 3}
    assert queue.entries(queue.name) == []
    assert queue.held() == 0


def refuse_writes(queue: QueueUnderTest, name: str) -> None:
    """Make the queue `name` refuse what is written to it: a Redis key of the wrong type (WRONGTYPE), or a
    RabbitMQ queue of length 0 that rejects publishes (the broker nacks them)."""
    if isinstance(queue, RabbitMQQueue):

        async def declare() -> None:
            connection = await aio_pika.connect(host="127.0.0.1", port=queue.server.port, timeout=5)
            try:
                channel = await connection.channel()
                await channel.declare_queue(
                    name, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
                )
            finally:
                await connection.close()

        asyncio.run(declare())
        return
    assert isinstance(queue, RedisListQueue | RedisStreamQueue)
    with redis_client(queue.address) as client:
        client.set(name, b"not a list or a stream")


def accept_writes(queue: QueueUnderTest, name: str) -> None:
    """Undo `refuse_writes`: the queue is gone, so the worker creates it afresh."""
    if isinstance(queue, RabbitMQQueue):

        async def delete() -> None:
            connection = await aio_pika.connect(host="127.0.0.1", port=queue.server.port, timeout=5)
            try:
                channel = await connection.channel()
                await channel.queue_delete(name)
            finally:
                await connection.close()

        asyncio.run(delete())
        return
    assert isinstance(queue, RedisListQueue | RedisStreamQueue)
    with redis_client(queue.address) as client:
        client.delete(name)


def test_a_job_whose_dead_letter_write_fails_stays_on_the_queue_until_the_write_succeeds(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    dead_letters = f"{queue.name}.dlq"
    refuse_writes(queue, dead_letters)
    worker = workers.start(queue)
    produce(queue, [("doomed", {"fail": "permanent"})])
    eventually(
        lambda: (
            "the job's destination refused it; job given back for a later try" in log_messages(worker.logs())
        ),
        what="the worker to report the refused dead-letter write",
        timeout=30,
    )
    accept_writes(queue, dead_letters)
    eventually(
        lambda: describe(queue.entries(dead_letters)) == [("doomed", "PermanentError")],
        what="the job to reach the dead-letter queue once it accepts writes",
        timeout=30,
    )
    refused = [entry for entry in worker.logs() if entry["message"].startswith("the job's destination")]
    assert refused[0]["destination"] == dead_letters
    assert refused[0]["level"] == "error"
    assert events(probe_log, "start")[0] == ("doomed", worker.pid)
    assert worker.jobs_total() == {"dead_lettered": 1}
    assert queue.entries(queue.name) == []
    assert queue.held() == 0


def cut_connections(address: str, seconds: float) -> None:
    """A connection blip: drop every other client's connection, again and again, for `seconds`."""
    deadline = time.monotonic() + seconds
    with redis_client(address) as client:
        for _ in range(1_000):
            if time.monotonic() >= deadline:
                break
            client.client_kill_filter(_type="normal", skipme=True)
            time.sleep(0.02)


def test_a_redis_list_worker_that_reconnects_does_not_give_away_the_jobs_it_is_running(
    redis_server: RedisServer, workers: Workers, probe_log: Path
) -> None:
    queue = RedisListQueue(redis_server.address, f"jobs-{uuid.uuid4().hex[:8]}")
    worker = workers.start(queue, concurrency=2)
    produce(queue, [("running", {"sleep": 3})])
    eventually(lambda: events(probe_log, "start"), what="the worker to start the job")
    cut_connections(redis_server.address, 1.5)
    eventually(
        lambda: "reconnected to the queue" in log_messages(worker.logs()),
        what="the worker to notice the blip and reconnect",
        timeout=20,
    )
    eventually(lambda: events(probe_log, "finish"), what="the job to finish", timeout=20)
    time.sleep(2)  # time enough for a duplicate to be taken, if the job had been given away
    assert worker.jobs_total() == {"succeeded": 1}
    assert [job_id for job_id, _pid in events(probe_log, "start")] == ["running"]
    assert queue.entries(queue.name) == []
    assert queue.held() == 0


SLOW_JOB_TYPE = {
    "slow-probe": {
        "lane": "normal",
        "timeoutSeconds": 60,
        "input": {"schema": {"type": "object", "required": ["id"]}},
        "retry": {"maxAttempts": 3, "backoff": {"initialSeconds": 0.2, "maxSeconds": 1, "multiplier": 2}},
        "deadLetter": {"queue": "slow.dlq"},
    }
}
"""A job type with a long timeout beside `probe` (4 s), so reclaim by the longest timeout would take a
minute."""


def produce_typed(queue: QueueUnderTest, job_type: str, jobs: list[tuple[str, dict[str, Any]]]) -> None:
    enqueue_raw(queue, [probe_body(job_id, payload, job_type=job_type) for job_id, payload in jobs])


def test_a_stream_entry_of_a_killed_worker_is_reclaimed_after_its_own_job_types_timeout(
    redis_server: RedisServer, workers: Workers, probe_log: Path
) -> None:
    queue = RedisStreamQueue(redis_server.address, f"jobs-{uuid.uuid4().hex[:8]}")
    doomed = workers.start(queue, extra_job_types=SLOW_JOB_TYPE)
    produce(queue, [("quick", {"sleep": 30})])  # a `probe` job: timeoutSeconds 4
    eventually(lambda: events(probe_log, "start"), what="the first worker to start the job")
    killed_at = time.monotonic()
    doomed.signal(signal.SIGKILL)
    doomed.wait_exit()
    survivor = workers.start(queue, extra_job_types=SLOW_JOB_TYPE)
    eventually(
        lambda: ("quick", survivor.pid) in events(probe_log, "start"),
        what="another worker to reclaim the job after probe's 4 s timeout, not slow-probe's 60 s",
        timeout=25,
    )
    assert time.monotonic() - killed_at < 25


def test_a_restarted_stream_worker_runs_its_own_pending_entries_at_once(
    redis_server: RedisServer, workers: Workers, probe_log: Path
) -> None:
    """A restarted container keeps its worker id (its consumer name): what the group still counts as
    delivered to it, it re-reads at start instead of waiting for the reclaim of a vanished worker's."""
    queue = RedisStreamQueue(redis_server.address, f"jobs-{uuid.uuid4().hex[:8]}")
    worker_id = f"restarted-{uuid.uuid4().hex[:6]}"
    first = workers.start(queue, worker_id=worker_id, extra_job_types=SLOW_JOB_TYPE)
    produce_typed(queue, "slow-probe", [("long", {"sleep": 30})])
    eventually(lambda: events(probe_log, "start"), what="the worker to start the job")
    first.signal(signal.SIGKILL)
    first.wait_exit()
    restarted = workers.start(queue, worker_id=worker_id, extra_job_types=SLOW_JOB_TYPE)
    eventually(
        lambda: ("long", restarted.pid) in events(probe_log, "start"),
        what="the restarted worker to run its own pending entry at once (not after 60 s + heartbeat)",
        timeout=10,
    )


def test_a_job_that_kills_its_worker_every_time_is_dead_lettered_as_crashed(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    """A poison job (its handler takes the process down: SIGKILL, OOM, segfault) must not be redelivered
    forever: after maxAttempts (3) deliveries it goes to the dead-letter queue with reason Crashed."""
    worker_id = f"crashing-{uuid.uuid4().hex[:6]}"  # a container restarted in place keeps its id
    produce(queue, [("poison", {"fail": "crash"})])
    dead_letters = f"{queue.name}.dlq"
    for _round in range(6):
        worker = workers.start(queue, worker_id=worker_id, wait=False)
        eventually(
            lambda: worker.process.poll() is not None or queue.entries(dead_letters),  # noqa: B023
            what="the worker to crash on the job, or the job to be dead-lettered",
            timeout=30,
        )
        if queue.entries(dead_letters):
            break
    assert describe(queue.entries(dead_letters)) == [("poison", "Crashed")]
    [dead] = queue.entries(dead_letters)
    assert dead.last_failure is not None
    assert "3" in dead.last_failure.message
    assert [job_id for job_id, _pid in events(probe_log, "start")] == ["poison"] * 3
    assert worker.process.poll() is None
    eventually(
        lambda: worker.jobs_total() == {"dead_lettered": 1}, what="the dead letter counted", timeout=10
    )
    assert queue.entries(queue.name) == []
    eventually(lambda: queue.held() == 0, what="nothing held", timeout=10)


def test_a_draining_rabbitmq_worker_takes_no_more_messages_and_gives_back_prefetched_ones(
    rabbitmq_server: RabbitMQServer, workers: Workers, probe_log: Path
) -> None:
    queue = RabbitMQQueue(rabbitmq_server.address, f"jobs-{uuid.uuid4().hex[:8]}", rabbitmq_server)
    worker = workers.start(queue, concurrency=2, drain_seconds=20)
    produce(queue, [("long", {"sleep": 3.5}), ("short", {"sleep": 1}), ("waiting", {})])  # timeout: 4 s
    eventually(lambda: len(events(probe_log, "start")) == 2, what="the worker to start two jobs")
    worker.signal(signal.SIGTERM)
    eventually(
        lambda: events(probe_log, "finish"), what="the short job to finish during the drain", interval=0.1
    )
    time.sleep(0.3)
    # The broker must not hand the draining worker the next message when a slot frees up: it stays
    # ready on the queue for other workers, while the long job still runs.
    assert describe(queue.entries(queue.name)) == [("waiting", None)]
    assert events(probe_log, "finish") == [("short", worker.pid)]
    assert worker.wait_exit() == 0
    assert [job_id for job_id, _pid in events(probe_log, "start")] == ["long", "short"]
    assert describe(queue.entries(queue.name)) == [("waiting", None)]


def test_a_rabbitmq_worker_asks_for_a_consumer_timeout_that_fits_its_longest_job_type(
    rabbitmq_server: RabbitMQServer, workers: Workers
) -> None:
    """The broker's default consumer timeout (30 min) would close the channel under a longer job. The
    worker sets x-consumer-timeout on its consumer (honoured by RabbitMQ 3.11.15 and later; older
    brokers ignore it and need `consumer_timeout` in their configuration)."""
    queue = RabbitMQQueue(rabbitmq_server.address, f"jobs-{uuid.uuid4().hex[:8]}", rabbitmq_server)
    long_type = {**SLOW_JOB_TYPE, "slow-probe": {**SLOW_JOB_TYPE["slow-probe"], "timeoutSeconds": 3600}}
    workers.start(queue, extra_job_types=long_type)
    produce(queue, [("one", {})])  # the consumer is registered on the first receive
    arguments = eventually(
        lambda: rabbitmq_server.consumer_arguments(queue.name),
        what="the worker's consumer to be registered",
        timeout=30,
    )
    timeout_ms = int(arguments["x-consumer-timeout"])
    assert 3600_000 < timeout_ms <= 3600_000 + 120_000
