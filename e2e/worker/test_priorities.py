"""JobType priorities on real queue servers with a real worker process: a mixed backlog is served
high first by the documented 4:2:1 weighting, low jobs are not starved, and the depth the autoscaler
reads counts every level; jobs a vanished worker held (list) or left pending (stream), scheduled runs
the operator enqueues and delayed jobs go to their own level."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devenv.queues import QueueUnderTest, RabbitMQQueue
from devenv.servers import RabbitMQServer, RedisServer
from devenv.waiting import eventually
from e2e.worker.conftest import Workers
from workerfleet import producer
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec, Priority
from workerfleet.api.workerpool import Queue
from workerfleet.backends.enqueue import enqueue as operator_enqueue
from workerfleet.backends.sources import open_source
from workerfleet.planners.priority import RABBITMQ_SEPARATOR, REDIS_SEPARATOR, WEIGHTS, level_queue
from workerfleet.worker.envelope import decode, encode, new_envelope
from workerfleet.worker.redis_list import RedisListBackend
from workerfleet.worker.redis_stream import RedisStreamBackend

JOBS_PER_LEVEL = 20
LEVEL_OF_TYPE = {"urgent-probe": "high", "routine-probe": "normal", "bulk-probe": "low"}
WINDOW = sum(WEIGHTS.values())


def job_types() -> dict[str, Any]:
    return {
        name: {"lane": "fast", "timeoutSeconds": 4, "priority": level}
        for name, level in LEVEL_OF_TYPE.items()
    }


def enqueue_backlog(queue: QueueUnderTest) -> None:
    """Low first, then normal, then high: the order priorities must undo."""
    spec = Queue.model_validate(queue.spec())

    async def send() -> None:
        for job_type in reversed(LEVEL_OF_TYPE):
            target = producer.Target(
                pool="probes",
                queue=spec,
                served=tuple(LEVEL_OF_TYPE),
                job_type=job_type,
                spec=JobTypeSpec.model_validate(job_types()[job_type]),
                credentials=Credentials(),
            )
            envelopes = [
                producer.build(target, {"id": f"{job_type}-{index}"}, job_id=f"{job_type}-{index}")
                for index in range(JOBS_PER_LEVEL)
            ]
            await producer.send(target, envelopes)

    asyncio.run(send())


def depth_read_by_the_autoscaler(queue: QueueUnderTest) -> int:
    async def read() -> int:
        source = open_source(Queue.model_validate(queue.spec()), Credentials())
        try:
            return (await source.read()).depth
        finally:
            await source.close()

    return asyncio.run(read())


def levels_in_start_order(probe_log: Path) -> list[str]:
    starts = [json.loads(line) for line in probe_log.read_text().splitlines()]
    return [LEVEL_OF_TYPE[entry["id"].rsplit("-", 1)[0]] for entry in starts if entry["event"] == "start"]


def test_a_mixed_backlog_is_served_by_priority_without_starving_low_jobs(
    queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    # Given a backlog of 20 jobs on each of three levels, enqueued low first
    enqueue_backlog(queue)
    # Then the autoscaler's depth counts every level
    assert depth_read_by_the_autoscaler(queue) == 3 * JOBS_PER_LEVEL

    # When one worker (one job at a time) serves the three JobTypes
    worker = workers.start(queue, extra_job_types=job_types())
    eventually(
        lambda: len(levels_in_start_order(probe_log)) == 3 * JOBS_PER_LEVEL,
        what="every job to start",
        timeout=30,
    )
    order = levels_in_start_order(probe_log)
    print("start order:", " ".join(level[0] for level in order))

    # Then while every level has jobs, each window of 7 starts holds 4 high, 2 normal and 1 low (give
    # or take the one job a consumer that was first to receive adds, on RabbitMQ), and so do all of them
    windows = range(0, JOBS_PER_LEVEL // WEIGHTS[Priority.HIGH] * WINDOW, WINDOW)
    for start in windows:
        window = order[start : start + WINDOW]
        for level, weight in WEIGHTS.items():
            assert abs(window.count(level) - weight) <= 1, f"starts {start}..{start + WINDOW}: {window}"
    served = order[: len(windows) * WINDOW]
    for level, weight in WEIGHTS.items():
        assert abs(served.count(level) - weight * len(windows)) <= 1, f"first {len(served)}: {served}"
    # And low jobs start long before the high backlog is empty
    last_high = len(order) - 1 - order[::-1].index("high")
    assert order.index("low") < WINDOW <= last_high, order
    worker.process.terminate()
    assert worker.wait_exit() == 0


def test_jobs_of_a_vanished_list_worker_go_back_to_their_own_levels(redis_server: RedisServer) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    queue = Queue.model_validate({"redis": {"address": redis_server.address, "list": name}}).redis
    assert queue is not None
    levels = {job_type: Priority(level) for job_type, level in LEVEL_OF_TYPE.items()}

    def worker(worker_id: str) -> RedisListBackend:
        return RedisListBackend(queue, Credentials(), worker_id, heartbeat_seconds=0.2, levels=levels)

    async def recovered() -> dict[str, list[str]]:
        holder, other = worker("vanishing"), worker("survivor")
        await holder.connect()
        await other.connect()
        try:
            # Given a worker holding one job of each level
            for job_type in LEVEL_OF_TYPE:
                await holder.enqueue(
                    encode(new_envelope(job_type, {}, now=datetime.now(UTC), job_id=job_type))
                )
            assert len(await holder.receive(3, 1)) == 3
            # When its heartbeat expires and another worker's upkeep recovers its jobs
            await asyncio.sleep(0.5)
            await other.maintain()
            with redis_server.client() as client:
                return {
                    level: [
                        decode(body).type for body in client.lrange(level_queue(name, Priority(level)), 0, -1)
                    ]
                    for level in LEVEL_OF_TYPE.values()
                }
        finally:
            await holder.close()
            await other.close()

    # Then each job waits on its own level's list again
    assert asyncio.run(recovered()) == {level: [job_type] for job_type, level in LEVEL_OF_TYPE.items()}


def test_a_scheduled_run_goes_onto_its_job_types_level(queue: QueueUnderTest) -> None:
    # Given a JobType of priority high whose schedule comes due before any worker of the pool ran
    body = encode(new_envelope("urgent-probe", {}, now=datetime.now(UTC), job_id="scheduled"))
    separator = RABBITMQ_SEPARATOR if isinstance(queue, RabbitMQQueue) else REDIS_SEPARATOR
    # When the operator enqueues the run
    asyncio.run(operator_enqueue(Queue.model_validate(queue.spec()), Credentials(), body, Priority.HIGH))
    # Then it waits on the high level's queue (on RabbitMQ declared for it, as no worker did yet)
    waiting = queue.entries(level_queue(queue.name, Priority.HIGH, separator))
    assert [job.id for job in waiting] == ["scheduled"]


def test_a_delayed_high_job_on_rabbitmq_reaches_its_level_when_due(rabbitmq_server: RabbitMQServer) -> None:
    # Given a RabbitMQ pool whose workers never ran, so no level's queue was declared
    queue = RabbitMQQueue(rabbitmq_server.address, f"jobs-{uuid.uuid4().hex[:8]}", rabbitmq_server)
    target = producer.Target(
        pool="probes",
        queue=Queue.model_validate(queue.spec()),
        served=("urgent-probe",),
        job_type="urgent-probe",
        spec=JobTypeSpec.model_validate(job_types()["urgent-probe"]),
        credentials=Credentials(),
    )
    # When a high job is sent to wait a second
    asyncio.run(producer.send(target, [producer.build(target, {}, job_id="later", delay=1)]))
    # Then it is on the high level's queue once due, not dropped by the delay queue for want of one
    high = level_queue(queue.name, Priority.HIGH, RABBITMQ_SEPARATOR)
    eventually(
        lambda: [job.id for job in queue.entries(high)] == ["later"], what="the job on its level", timeout=10
    )


def test_a_high_entry_of_a_vanished_stream_worker_is_reclaimed_from_its_level(
    redis_server: RedisServer,
) -> None:
    spec = {
        "address": redis_server.address,
        "stream": f"jobs-{uuid.uuid4().hex[:8]}",
        "consumerGroup": "workers",
    }
    queue = Queue.model_validate({"redisStream": spec}).redis_stream
    assert queue is not None
    levels = {job_type: Priority(level) for job_type, level in LEVEL_OF_TYPE.items()}

    def worker(worker_id: str) -> RedisStreamBackend:
        return RedisStreamBackend(
            queue,
            Credentials(),
            worker_id,
            reclaim_idle_seconds=0.2,
            reclaim_interval_seconds=0.1,
            levels=levels,
        )

    async def reclaimed() -> list[tuple[str, int]]:
        holder, other = worker("vanishing"), worker("survivor")
        await holder.connect()
        await other.connect()
        try:
            # Given a worker holding a high job, which then stops settling anything
            await holder.enqueue(
                encode(new_envelope("urgent-probe", {}, now=datetime.now(UTC), job_id="held"))
            )
            assert len(await holder.receive(1, 1)) == 1
            # When its entry has been pending past the limit and another worker receives
            await asyncio.sleep(0.4)
            taken = await other.receive(1, 1)
            for delivery in taken:
                await other.complete(delivery, None)
            return [(decode(delivery.body).id, delivery.deliveries) for delivery in taken]
        finally:
            await holder.close()
            await other.close()

    # Then the other takes it over from the high level's stream, counted as a second delivery
    assert asyncio.run(reclaimed()) == [("held", 2)]
