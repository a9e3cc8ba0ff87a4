"""A keyed job delivered twice at the same time (a producer retry, a redelivery while the first copy still
runs, a list recovery after a missed heartbeat) runs once: the first copy claims its key before the
handler runs, and the second waits for the claim to end, then settles as a duplicate.

Real worker processes on real Redis (list, stream) and RabbitMQ with an idempotency store.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from devenv.queues import QueueUnderTest, RabbitMQQueue, RedisListQueue, RedisStreamQueue
from devenv.servers import RabbitMQServer, RedisServer
from devenv.waiting import eventually
from e2e.worker.conftest import Workers
from e2e.worker.test_worker_processes import events, produce


@pytest.fixture(params=["redis-list", "redis-stream", "rabbitmq-with-store"])
def shared_key_queue(request: pytest.FixtureRequest, redis_server: RedisServer) -> QueueUnderTest:
    """A queue on every backend whose completed keys all workers share."""
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    if request.param == "rabbitmq-with-store":
        rabbitmq: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
        return RabbitMQQueue(rabbitmq.address, name, rabbitmq, store=redis_server.address)
    if request.param == "redis-list":
        return RedisListQueue(redis_server.address, name)
    return RedisStreamQueue(redis_server.address, name)


def test_two_copies_of_a_keyed_job_delivered_at_once_to_two_workers_run_once(
    shared_key_queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    queue = shared_key_queue
    first = workers.start(queue)
    second = workers.start(queue)
    # The same job twice (a producer that retried its enqueue); each worker takes one (concurrency 1),
    # and the handler runs long enough for the two to overlap.
    produce(queue, [("twice", {"sleep": 2}), ("twice", {"sleep": 2})])

    def outcomes() -> Counter[str]:
        return Counter(first.jobs_total()) + Counter(second.jobs_total())

    settled = eventually(
        lambda: found if (found := outcomes()).total() >= 2 else None,
        what="both copies to be settled",
        timeout=30,
    )
    started = events(probe_log, "start")
    assert len(started) == 1, f"the keyed job ran {len(started)} times: {started}"
    assert settled == {"succeeded": 1, "duplicate": 1}, settled
    assert queue.entries(f"{queue.name}.dlq") == []
    assert queue.entries(queue.name) == []
    eventually(lambda: queue.held() == 0, what="no copy still held", timeout=10)
